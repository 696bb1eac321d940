//! `--cluster GLOB`: shell-style patterns over cluster names (`*`, `?`, `[abc]`, `[a-z]`, `[!a]`).

/// True when `s` holds a glob metacharacter, so `--cluster s` names several clusters.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyMany,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A checked pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Parses a pattern; an unclosed `[` is an error.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::AnyMany) {
                        tokens.push(Token::AnyMany);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '[' => {
                    let mut j = i + 1;
                    let negated = matches!(chars.get(j), Some('!' | '^'));
                    if negated {
                        j += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = chars.get(j) else {
                            return Err(format!("unclosed [ at position {}", i + 1));
                        };
                        if c == ']' && !first {
                            j += 1;
                            break;
                        }
                        first = false;
                        if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']') {
                            let end = chars[j + 2];
                            if end < c {
                                return Err(format!("range {c}-{end} is backwards"));
                            }
                            ranges.push((c, end));
                            j += 3;
                        } else {
                            ranges.push((c, c));
                            j += 1;
                        }
                    }
                    tokens.push(Token::Class { negated, ranges });
                    i = j;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Glob { tokens })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let chars: Vec<char> = name.chars().collect();
        // Iterative matching with one backtrack point for the last `*`.
        let (mut t, mut c) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while c < chars.len() {
            let step = match self.tokens.get(t) {
                Some(Token::AnyMany) => {
                    star = Some((t, c));
                    t += 1;
                    continue;
                }
                Some(Token::AnyOne) => true,
                Some(Token::Literal(l)) => *l == chars[c],
                Some(Token::Class { negated, ranges }) => {
                    ranges.iter().any(|(a, b)| (*a..=*b).contains(&chars[c])) != *negated
                }
                None => false,
            };
            if step {
                t += 1;
                c += 1;
            } else if let Some((st, sc)) = star {
                t = st + 1;
                c = sc + 1;
                star = Some((st, sc + 1));
            } else {
                return false;
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == Token::AnyMany)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_a_shell() {
        let cases = [
            ("prod-*", "prod-a", true),
            ("prod-*", "prod-", true),
            ("prod-*", "staging-a", false),
            ("*", "", true),
            ("*-a", "prod-a", true),
            ("*-a", "prod-b", false),
            ("p?od-a", "prod-a", true),
            ("p?od-a", "pod-a", false),
            ("prod-[ab]", "prod-b", true),
            ("prod-[ab]", "prod-c", false),
            ("prod-[a-c]", "prod-c", true),
            ("prod-[!a-c]", "prod-c", false),
            ("prod-[!a-c]", "prod-d", true),
            ("prod-[]]", "prod-]", true),
            ("*a*b*", "xaxxbx", true),
            ("*a*b*", "xbxxax", false),
            ("a**b", "ab", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, name, expected) in cases {
            let glob = Glob::new(pattern).expect("pattern");
            assert_eq!(glob.matches(name), expected, "{pattern} vs {name}");
        }
        assert!(Glob::new("prod-[ab").is_err());
        assert!(Glob::new("[z-a]").is_err());
        assert!(is_pattern("prod-*") && is_pattern("a?") && is_pattern("[ab]"));
        assert!(!is_pattern("prod-a"));
    }
}
