//! The older rule sugar that is not CEL — units after numbers (`100MB`, `1.5 GiB`, `7B`)
//! and percent signs (`80%`) — found in a rule that did not parse, to say its CEL spelling
//! (and the whole rule in CEL, misspelt names corrected, when that is a valid rule).

use super::*;

const UNITS: [(&str, f64); 9] = [
    ("B", 1.0),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("KiB", 1024.0),
    ("MiB", 1_048_576.0),
    ("GiB", 1_073_741_824.0),
    ("TiB", 1_099_511_627_776.0),
];

/// One piece of old sugar: its characters and the CEL for it.
struct Found {
    start: usize,
    end: usize,
    instead: String,
}

/// The error for the first piece of old sugar in `source`, if any: what to write instead,
/// and the whole rule in CEL when that is a valid rule.
pub(super) fn old_syntax(source: &str) -> Option<RuleError> {
    let chars: Vec<char> = source.chars().collect();
    let found = scan(&chars);
    let first = found.first()?;
    let mut whole = String::new();
    let mut at = 0;
    for f in &found {
        whole.extend(&chars[at..f.start]);
        whole.push_str(&f.instead);
        at = f.end;
    }
    whole.extend(&chars[at..]);
    Some(RuleError::OldSyntax {
        rule: source.to_string(),
        found: chars[first.start..first.end].iter().collect(),
        instead: first.instead.clone(),
        whole: valid(whole),
        at: Place::of(source, first.start, first.end),
    })
}

/// The rewritten rule if it is valid, with misspelt names corrected (`dbsize`).
fn valid(mut whole: String) -> Option<String> {
    for _ in 0..4 {
        match Rule::parse_cel(&whole) {
            Ok(_) => return Some(whole),
            Err(RuleError::UnknownVariable {
                name,
                suggestion: Some(known),
                at,
                ..
            }) if !known.starts_with('`') && at.line == 1 => {
                let chars: Vec<char> = whole.chars().collect();
                let start = at.column - 1;
                let end = start + name.chars().count();
                if chars.get(start..end)?.iter().collect::<String>() != name {
                    return None;
                }
                whole = chars[..start]
                    .iter()
                    .copied()
                    .chain(known.chars())
                    .chain(chars[end..].iter().copied())
                    .collect();
            }
            Err(_) => return None,
        }
    }
    None
}

fn scan(chars: &[char]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' || c == '.' {
            // A name (or a number inside one) is skipped whole.
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if chars[start].is_ascii_digit() || (c == '.' && i == start) {
                i = start;
                if let Some(f) = number(chars, &mut i) {
                    found.push(f);
                }
            } else if i == start {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    found
}

/// A number at `*i`, and the unit or percent sign after it when there is one.
fn number(chars: &[char], i: &mut usize) -> Option<Found> {
    let start = *i;
    let digits = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(i);
    if *i < chars.len() && chars[*i] == '.' {
        *i += 1;
        digits(i);
    }
    if *i < chars.len() && matches!(chars[*i], 'e' | 'E') {
        let mut j = *i + 1;
        if j < chars.len() && matches!(chars[j], '+' | '-') {
            j += 1;
        }
        if j < chars.len() && chars[j].is_ascii_digit() {
            *i = j;
            digits(i);
        }
    }
    let text: String = chars[start..*i].iter().collect();
    let value: f64 = text.parse().ok()?;
    let mut j = *i;
    while j < chars.len() && chars[j] == ' ' {
        j += 1;
    }
    if j < chars.len() && chars[j] == '%' {
        // A percent sign, not CEL's modulo: no operand follows.
        let mut k = j + 1;
        while k < chars.len() && chars[k].is_whitespace() {
            k += 1;
        }
        let operand = k < chars.len() && (chars[k].is_alphanumeric() || chars[k] == '(');
        if operand {
            return None;
        }
        *i = j + 1;
        return Some(Found {
            start,
            end: j + 1,
            instead: plain(value / 100.0),
        });
    }
    let word_end = (j..chars.len())
        .find(|&k| !(chars[k].is_alphanumeric() || chars[k] == '_'))
        .unwrap_or(chars.len());
    if word_end == j {
        return None;
    }
    let word: String = chars[j..word_end].iter().collect();
    let unit = UNITS.iter().find(|(u, _)| *u == word).or_else(|| {
        let lower = word.to_ascii_lowercase();
        UNITS.iter().find(|(u, _)| {
            let u = u.to_ascii_lowercase();
            u == lower || u == format!("{lower}b")
        })
    })?;
    *i = word_end;
    Some(Found {
        start,
        end: word_end,
        instead: in_cel(value, unit),
    })
}

/// `value` units in CEL: `100 * MB`, `1536 * MiB`, `7`.
fn in_cel(value: f64, (unit, size): &(&str, f64)) -> String {
    let bytes = value * size;
    let family: Vec<&(&str, f64)> = if unit.contains('i') {
        UNITS.iter().filter(|(u, _)| u.contains('i')).collect()
    } else {
        UNITS
            .iter()
            .filter(|(u, s)| !u.contains('i') && *s > 1.0)
            .collect()
    };
    for (u, s) in family.iter().rev() {
        let n = bytes / s;
        if *s <= bytes && n.fract() == 0.0 && n < 1e15 {
            return format!("{} * {u}", n as i64);
        }
    }
    if bytes.fract() == 0.0 && bytes.abs() < 9e18 {
        format!("{}", bytes as i64)
    } else {
        format!("{}", bytes.round())
    }
}

/// A ratio as a CEL double literal: `0.8`, `1.0`.
fn plain(v: f64) -> String {
    let s = format!("{v}");
    if s.contains(['.', 'e', 'i', 'N']) {
        s
    } else {
        format!("{s}.0")
    }
}
