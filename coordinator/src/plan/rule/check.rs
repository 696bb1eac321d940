//! The checks a parsed rule passes before any plan is shown: only the parts a defrag rule
//! needs (numbers, the variables and sizes, arithmetic, comparisons, `&& || !`, `?:`,
//! `int()`, `double()`), CEL's types (no arithmetic mixing integers and doubles), bounded
//! nesting; plus the CEL parser's errors in this tool's words, each node's place in the
//! source, and the did-you-mean for an unknown name.

use cel::common::ast::{Expr, LiteralValue, SourceInfo};
use cel::{IdedExpr, ParseErrors};

use super::*;

/// The CEL parser's first error, with a place and a hint.
pub(super) fn syntax_error(source: &str, errors: &ParseErrors) -> RuleError {
    let rule = source.to_string();
    let Some(first) = errors.errors.first() else {
        return RuleError::Syntax {
            rule,
            message: "syntax error".into(),
            hint: String::new(),
            at: Place::of(source, 0, 0),
        };
    };
    let (line, column) = (
        usize::try_from(first.pos.0).unwrap_or(1).max(1),
        usize::try_from(first.pos.1).unwrap_or(1).max(1),
    );
    let msg = first.msg.trim_start_matches("Syntax error: ");
    // `token recognition error at: '= '`, `extraneous input 'MB' expecting …`,
    // `mismatched input '<EOF>' expecting …`
    let quoted = msg
        .split_once('\'')
        .and_then(|(_, rest)| rest.rsplit_once('\'').map(|(q, _)| q))
        .map(|q| q.split_once("' expecting").map_or(q, |(q, _)| q));
    let expecting = msg.split_once(" expecting ").map_or("", |(_, e)| e);
    let missing = msg
        .strip_prefix("missing '")
        .and_then(|rest| rest.split_once('\'').map(|(m, _)| m));
    let (message, hint, width) = match (missing, quoted) {
        (Some(m), _) => {
            let hint = if m == ")" { "; a `(` is never closed" } else { "" };
            (format!("missing `{m}`"), hint, 1)
        }
        (None, quoted) => match quoted {
            Some("<EOF>") => {
                let expected = if expecting.contains("')'") && !expecting.contains("NUM_INT") {
                    "; a `(` is never closed"
                } else {
                    "; expected a number, a variable, true, false, `!`, `-` or `(`"
                };
                ("unexpected end of the rule".to_string(), expected, 1)
            }
            Some(found) if msg.starts_with("token recognition error") => {
                let c = found.chars().next().unwrap_or(' ');
                let hint = match c {
                    '=' => "; write `==` to compare",
                    '&' => "; write `&&` for and",
                    '|' => "; write `||` for or",
                    _ => "",
                };
                (format!("unexpected `{c}`"), hint, 1)
            }
            Some(found) => {
                let hint = match found.to_ascii_lowercase().as_str() {
                    "and" => "; write `&&` for and",
                    "or" => "; write `||` for or",
                    "not" => "; write `!` for not",
                    _ if found == ")" => "; this `)` has no matching `(`",
                    _ if expecting.contains("')'") && !expecting.contains("<EOF>") => {
                        "; expected an operator or `)`"
                    }
                    _ if expecting.contains("'&&'") || expecting.contains("<EOF>") => {
                        "; join conditions with && or ||"
                    }
                    _ => "",
                };
                (format!("unexpected `{found}`"), hint, found.chars().count())
            }
            None => (msg.to_string(), "", 1),
        },
    };
    let mut at = Place::of(source, 0, 0);
    at.line = line;
    at.column = column;
    at.width = width.max(1);
    RuleError::Syntax {
        rule,
        message,
        hint: hint.to_string(),
        at,
    }
}

/// Refuses more than [`MAX_PARENS`] nested parentheses or brackets, before parsing.
pub(super) fn parentheses(source: &str) -> Result<(), RuleError> {
    let mut depth = 0usize;
    for (i, c) in source.chars().enumerate() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_PARENS {
                    return Err(RuleError::TooManyParens {
                        rule: source.to_string(),
                        max: MAX_PARENS,
                        at: Place::of(source, i, i + 1),
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Each node's characters: the union of its own token and its children's, widened to
/// the parentheses that enclose exactly it.
pub(super) fn spans(source: &str, expr: &IdedExpr, info: &SourceInfo) -> Spans {
    let chars: Vec<char> = source.chars().collect();
    let mut spans = Spans::new();
    span_of(&chars, expr, info, &mut spans, 0);
    spans
}

fn span_of(
    chars: &[char],
    expr: &IdedExpr,
    info: &SourceInfo,
    spans: &mut Spans,
    depth: usize,
) -> Option<(usize, usize)> {
    let own = info
        .offset_for(expr.id)
        .map(|(start, stop)| (start as usize, (stop as usize + 1).max(start as usize + 1)));
    let mut span = own;
    // The checker refuses deeper rules; never recurse without bound.
    if depth <= MAX_DEPTH + 1 {
        for child in children(expr) {
            if let Some((s, e)) = span_of(chars, child, info, spans, depth + 1) {
                span = Some(span.map_or((s, e), |(a, b)| (a.min(s), b.max(e))));
            }
        }
    }
    let (mut start, mut end) = span?;
    end = end.min(chars.len());
    start = start.min(end);
    // A function call's own token is its `(`: take in the name before it.
    if let Expr::Call(call) = &expr.expr
        && symbol(&call.func_name).is_none()
    {
        let name: Vec<char> = call.func_name.chars().collect();
        if start >= name.len() && chars[start - name.len()..start] == name[..] {
            start -= name.len();
        }
    }
    // Unbalanced parentheses inside: take in the enclosing ones.
    loop {
        let inside = &chars[start..end];
        let open = inside.iter().filter(|c| **c == '(').count();
        let close = inside.iter().filter(|c| **c == ')').count();
        if close > open {
            match chars[..start].iter().rposition(|c| !c.is_whitespace()) {
                Some(i) if chars[i] == '(' => start = i,
                _ => break,
            }
        } else if open > close {
            match chars[end..].iter().position(|c| !c.is_whitespace()) {
                Some(i) if chars[end + i] == ')' => end = end + i + 1,
                _ => break,
            }
        } else {
            break;
        }
    }
    spans.insert(expr.id, (start, end));
    Some((start, end))
}

fn children(expr: &IdedExpr) -> Vec<&IdedExpr> {
    match &expr.expr {
        Expr::Call(call) => call.target.iter().map(|t| &**t).chain(&call.args).collect(),
        Expr::Select(select) => vec![&*select.operand],
        Expr::List(list) => list.elements.iter().collect(),
        _ => Vec::new(),
    }
}

/// Every identifier a (checked) rule names.
pub(super) fn names(expr: &IdedExpr) -> Vec<&str> {
    let mut out = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        if let Expr::Ident(name) = &e.expr {
            out.push(name.as_str());
        }
        stack.extend(children(e));
    }
    out
}

/// The symbol an operator is written with.
pub(super) fn symbol(func: &str) -> Option<&'static str> {
    Some(match func {
        "_&&_" => "&&",
        "_||_" => "||",
        "!_" => "!",
        "-_" => "-",
        "_+_" => "+",
        "_-_" => "-",
        "_*_" => "*",
        "_/_" => "/",
        "_%_" => "%",
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        "_==_" => "==",
        "_!=_" => "!=",
        "_?_:_" => "?:",
        _ => return None,
    })
}

/// The name meant by an unknown one, or the operator meant by a word.
pub(super) fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "and" => return Some("`&&`"),
        "or" => return Some("`||`"),
        "not" => return Some("`!`"),
        _ => {}
    }
    let known = Variable::ALL
        .iter()
        .map(|v| v.name())
        .chain(CONSTANTS.iter().map(|(c, _)| *c));
    if let Some(exact) = known.clone().find(|k| k.to_ascii_lowercase() == lower) {
        return Some(exact);
    }
    let (best, distance) = known
        .map(|k| (k, edit_distance(&lower, &k.to_ascii_lowercase())))
        .min_by_key(|(_, d)| *d)?;
    (distance <= 3 && distance < name.chars().count()).then_some(best)
}

/// Levenshtein distance (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
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

/// Checks a parsed rule, giving each part's type.
pub(super) struct Checker<'a> {
    pub(super) source: &'a str,
    pub(super) spans: &'a Spans,
}

impl Checker<'_> {
    fn at(&self, expr: &IdedExpr) -> Place {
        let (start, end) = self.spans.get(&expr.id).copied().unwrap_or((0, 0));
        Place::of(self.source, start, end)
    }

    fn text(&self, expr: &IdedExpr) -> String {
        let (start, end) = self.spans.get(&expr.id).copied().unwrap_or((0, 0));
        self.source
            .chars()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect()
    }

    fn unsupported(&self, expr: &IdedExpr, what: String) -> RuleError {
        RuleError::Unsupported {
            rule: self.source.to_string(),
            what,
            at: self.at(expr),
        }
    }

    /// The operand must be `want` (a condition) or a number.
    fn operand(
        &self,
        operator: &'static str,
        arg: &IdedExpr,
        found: Ty,
        want_condition: bool,
        expected: &'static str,
    ) -> Result<(), RuleError> {
        if want_condition == (found == Ty::Bool) {
            return Ok(());
        }
        let hint = if want_condition {
            "compare it to make a condition, e.g. `dbSizeFree > 100 * MB`"
        } else {
            "only numbers are added, multiplied or compared with < >; join conditions with && or ||"
        };
        Err(RuleError::TypeMismatch {
            rule: self.source.to_string(),
            operator,
            expected,
            operand: self.text(arg),
            found,
            hint,
            at: self.at(arg),
        })
    }

    /// The type of `expr`, or why it is not a valid part of a rule.
    pub(super) fn check(&self, expr: &IdedExpr, depth: usize) -> Result<Ty, RuleError> {
        if depth > MAX_DEPTH {
            return Err(RuleError::TooDeep {
                rule: self.source.to_string(),
                max: MAX_DEPTH,
                at: self.at(expr),
            });
        }
        let call = match &expr.expr {
            Expr::Literal(LiteralValue::Int(_)) => return Ok(Ty::Int),
            Expr::Literal(LiteralValue::Double(_)) => return Ok(Ty::Double),
            Expr::Literal(LiteralValue::Boolean(_)) => return Ok(Ty::Bool),
            Expr::Literal(LiteralValue::UInt(_)) => {
                return Err(self.unsupported(expr, format!("the unsigned integer `{}`", self.text(expr))));
            }
            Expr::Literal(_) => {
                return Err(self.unsupported(expr, format!("the literal `{}`", self.text(expr))));
            }
            Expr::Ident(name) => {
                if let Some(v) = Variable::from_name(name) {
                    return Ok(v.ty());
                }
                if CONSTANTS.iter().any(|(c, _)| c == name) {
                    return Ok(Ty::Int);
                }
                return Err(RuleError::UnknownVariable {
                    rule: self.source.to_string(),
                    name: name.clone(),
                    suggestion: suggest(name),
                    at: self.at(expr),
                });
            }
            Expr::Call(call) if call.target.is_none() => call,
            Expr::Call(call) => {
                return Err(self.unsupported(expr, format!("the method `.{}()`", call.func_name)));
            }
            _ => return Err(self.unsupported(expr, format!("`{}`", self.text(expr)))),
        };
        let func = call.func_name.as_str();
        let mut types = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            types.push(self.check(arg, depth + 1)?);
        }
        let args: Vec<(&IdedExpr, Ty)> = call.args.iter().zip(types).collect();
        let Some(op) = symbol(func) else {
            return match (func, args.as_slice()) {
                ("int", [(arg, ty)]) => {
                    self.operand("int()", arg, *ty, false, "a number")?;
                    Ok(Ty::Int)
                }
                ("double", [(arg, ty)]) => {
                    self.operand("double()", arg, *ty, false, "a number")?;
                    Ok(Ty::Double)
                }
                _ => Err(self.unsupported(expr, format!("`{}`", self.text(expr)))),
            };
        };
        match (func, args.as_slice()) {
            ("_&&_" | "_||_", [(l, lt), (r, rt)]) => {
                self.operand(op, l, *lt, true, "a condition on each side")?;
                self.operand(op, r, *rt, true, "a condition on each side")?;
                Ok(Ty::Bool)
            }
            ("!_", [(x, t)]) => {
                self.operand(op, x, *t, true, "a condition after it")?;
                Ok(Ty::Bool)
            }
            ("-_", [(x, t)]) => {
                self.operand(op, x, *t, false, "a number after it")?;
                Ok(*t)
            }
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", [(l, lt), (r, rt)]) => {
                self.operand(op, l, *lt, false, "a number on each side")?;
                self.operand(op, r, *rt, false, "a number on each side")?;
                if lt != rt {
                    let (l, r) = (self.text(l), self.text(r));
                    let (l, r) = if *lt == Ty::Int {
                        (format!("double({l})"), r)
                    } else {
                        (l, format!("double({r})"))
                    };
                    return Err(RuleError::MixedNumbers {
                        rule: self.source.to_string(),
                        expr: self.text(expr),
                        instead: format!("{l} {op} {r}"),
                        at: self.at(expr),
                    });
                }
                if func == "_%_" && *lt == Ty::Double {
                    return Err(self.unsupported(expr, "`%` (modulo) of doubles".into()));
                }
                Ok(*lt)
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_" | "_==_" | "_!=_", [(l, lt), (r, rt)]) => {
                let equality = matches!(func, "_==_" | "_!=_");
                if equality && *lt == Ty::Bool {
                    self.operand(op, r, *rt, true, "a condition on each side")?;
                } else if equality && *rt == Ty::Bool {
                    self.operand(op, l, *lt, true, "a condition on each side")?;
                } else {
                    self.operand(op, l, *lt, false, "a number on each side")?;
                    self.operand(op, r, *rt, false, "a number on each side")?;
                }
                for (side, ty, other) in [(l, lt, rt), (r, rt, lt)] {
                    if *ty == Ty::Int && *other == Ty::Double {
                        self.integer_division(side)?;
                    }
                }
                Ok(Ty::Bool)
            }
            ("_?_:_", [(c, ct), (_, at), (b, bt)]) => {
                self.operand("?:", c, *ct, true, "a condition before `?`")?;
                if at != bt {
                    return Err(RuleError::TypeMismatch {
                        rule: self.source.to_string(),
                        operator: "?:",
                        expected: "the same type on both branches",
                        operand: self.text(b),
                        found: *bt,
                        hint: "make both branches numbers of one type (`double()`, `int()`) or both conditions",
                        at: self.at(b),
                    });
                }
                Ok(*at)
            }
            _ => Err(self.unsupported(expr, format!("`{}`", self.text(expr)))),
        }
    }

    /// Refuses `a / b` between integers compared with a double: it is 0 or 1, not a ratio.
    fn integer_division(&self, side: &IdedExpr) -> Result<(), RuleError> {
        let Expr::Call(call) = &side.expr else {
            return Ok(());
        };
        if call.func_name != "_/_" || call.args.len() != 2 {
            return Ok(());
        }
        Err(RuleError::IntegerDivision {
            rule: self.source.to_string(),
            expr: self.text(side),
            instead: format!(
                "double({}) / double({})",
                self.text(&call.args[0]),
                self.text(&call.args[1])
            ),
            at: self.at(side),
        })
    }
}
