//! Tokens of a rule, with units, and the did-you-mean suggestions for names.

use super::syntax::*;
use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TokKind {
    Num(f64, Dim),
    Ident,
    Op(BinOp),
    Not,
    LParen,
    RParen,
    End,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token {
    pub(super) kind: TokKind,
    pub(super) span: Span,
}

pub(super) fn column(source: &str, byte: usize) -> usize {
    source.get(..byte).map_or(0, |s| s.chars().count()) + 1
}

pub(super) fn text(source: &str, span: Span) -> &str {
    source.get(span.0..span.1).unwrap_or("")
}

pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
    pub(super) binary_units: bool,
}

impl<'a> Lexer<'a> {
    pub(super) fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    pub(super) fn peek_at(&self, ahead: usize) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().nth(ahead))
    }

    pub(super) fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while let Some(c) = self.peek() {
            if !pred(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    pub(super) fn unexpected(&self, found: char, at: usize, hint: &'static str) -> RuleError {
        RuleError::UnexpectedChar {
            rule: self.src.to_string(),
            found,
            column: column(self.src, at),
            hint,
        }
    }

    pub(super) fn next_token(&mut self) -> Result<Token, RuleError> {
        self.eat_while(char::is_whitespace);
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token {
                kind: TokKind::End,
                span: (start, start),
            });
        };
        if c.is_ascii_digit() {
            return self.number();
        }
        if c.is_alphabetic() || c == '_' {
            self.eat_while(|c| c.is_alphanumeric() || c == '_');
            return Ok(Token {
                kind: TokKind::Ident,
                span: (start, self.pos),
            });
        }
        let next = self.peek_at(1);
        let (kind, len) = match (c, next) {
            ('(', _) => (TokKind::LParen, 1),
            (')', _) => (TokKind::RParen, 1),
            ('+', _) => (TokKind::Op(BinOp::Add), 1),
            ('-', _) => (TokKind::Op(BinOp::Sub), 1),
            ('*', _) => (TokKind::Op(BinOp::Mul), 1),
            ('/', _) => (TokKind::Op(BinOp::Div), 1),
            ('|', Some('|')) => (TokKind::Op(BinOp::Or), 2),
            ('&', Some('&')) => (TokKind::Op(BinOp::And), 2),
            ('=', Some('=')) => (TokKind::Op(BinOp::Eq), 2),
            ('!', Some('=')) => (TokKind::Op(BinOp::Ne), 2),
            ('<', Some('=')) => (TokKind::Op(BinOp::Le), 2),
            ('>', Some('=')) => (TokKind::Op(BinOp::Ge), 2),
            ('<', _) => (TokKind::Op(BinOp::Lt), 1),
            ('>', _) => (TokKind::Op(BinOp::Gt), 1),
            ('!', _) => (TokKind::Not, 1),
            ('|', _) => return Err(self.unexpected(c, start, "; write `||` for or")),
            ('&', _) => return Err(self.unexpected(c, start, "; write `&&` for and")),
            ('=', _) => return Err(self.unexpected(c, start, "; write `==` to compare")),
            ('%', _) => {
                return Err(self.unexpected(
                    c,
                    start,
                    "; `%` is a percent sign right after a number (80% = 0.8); there is no modulo",
                ));
            }
            ('.', _) => return Err(self.unexpected(c, start, "; write numbers with a leading digit (0.5)")),
            _ => return Err(self.unexpected(c, start, "")),
        };
        self.pos += len;
        Ok(Token {
            kind,
            span: (start, self.pos),
        })
    }

    /// `12`, `2.5`, `1e6`, `2.5e-3`, each with an optional unit: `100MB`, `100 MB`, `80%`.
    pub(super) fn number(&mut self) -> Result<Token, RuleError> {
        let start = self.pos;
        let bad = |lexer: &Lexer<'_>, reason| RuleError::BadNumber {
            rule: lexer.src.to_string(),
            text: text(lexer.src, (start, lexer.pos)).to_string(),
            column: column(lexer.src, start),
            reason,
        };
        self.eat_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') {
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(bad(self, "expected digits after the decimal point"));
            }
            self.eat_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let exponent = match self.peek_at(1) {
                Some(c) if c.is_ascii_digit() => true,
                Some('+' | '-') => self.peek_at(2).is_some_and(|c| c.is_ascii_digit()),
                _ => false,
            };
            if exponent {
                self.pos += 2;
                self.eat_while(|c| c.is_ascii_digit());
            }
        }
        let digits_end = self.pos;
        let mut value: f64 = match text(self.src, (start, digits_end)).parse() {
            Ok(v) => v,
            Err(_) => return Err(bad(self, "not a number")),
        };
        let mut dim = Dim::Plain;
        let mut unit_start;
        let attached = self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_');
        if attached {
            unit_start = self.pos;
            self.eat_while(|c| c.is_alphanumeric() || c == '_');
        } else if self.peek() == Some('%') {
            self.pos += 1;
            value /= 100.0;
            dim = Dim::Ratio;
            unit_start = self.pos;
        } else {
            // `100 MB`: a unit after spaces belongs to the number (and so does a misspelt one,
            // `100 mb`); any other word does not, and is left to the parser.
            let saved = self.pos;
            self.eat_while(char::is_whitespace);
            unit_start = self.pos;
            self.eat_while(|c| c.is_alphanumeric() || c == '_');
            if suggest_unit(text(self.src, (unit_start, self.pos))).is_none() {
                self.pos = saved;
                unit_start = saved;
            }
        }
        let unit = text(self.src, (unit_start, self.pos));
        if !unit.is_empty() {
            let Some((name, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
                return Err(RuleError::UnknownUnit {
                    rule: self.src.to_string(),
                    unit: unit.to_string(),
                    column: column(self.src, unit_start),
                    suggestion: suggest_unit(unit),
                });
            };
            value *= factor;
            dim = Dim::Bytes;
            self.binary_units |= name.contains('i');
        }
        if !value.is_finite() {
            return Err(bad(self, "too large"));
        }
        Ok(Token {
            kind: TokKind::Num(value, dim),
            span: (start, self.pos),
        })
    }
}

pub(super) fn suggest_unit(unit: &str) -> Option<&'static str> {
    if unit.is_empty() {
        return None;
    }
    let lower = unit.to_ascii_lowercase();
    UNITS.iter().map(|(u, _)| *u).find(|u| {
        let u_lower = u.to_ascii_lowercase();
        u_lower == lower || u_lower == format!("{lower}b")
    })
}

pub(super) fn suggest_variable(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "and" => return Some("`&&`"),
        "or" => return Some("`||`"),
        "not" => return Some("`!`"),
        "true" => return Some("true"),
        "false" => return Some("false"),
        _ => {}
    }
    let (best, distance) = Variable::ALL
        .into_iter()
        .map(|v| (v.name(), edit_distance(&lower, &v.name().to_ascii_lowercase())))
        .min_by_key(|(_, d)| *d)?;
    (distance <= 3).then_some(best)
}

/// Levenshtein distance (names are short).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}
