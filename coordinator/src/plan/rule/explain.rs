//! [`Rule::explain`]: one line for a plan's notes with each compared value computed, e.g.
//! `dbSize - dbSizeInUse = 240.0 MB > 100 * MB: true`, sizes printed as sizes.

use cel::common::ast::{Expr, LiteralValue};

use super::*;

/// What a number measures, only to print it well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Plain,
    Bytes,
    Ratio,
}

impl Rule {
    /// One line for a human reading a plan: the rule with each compared value computed,
    /// and the outcome, e.g. `dbSize - dbSizeInUse = 240.0 MB > 100 * MB: true`.
    pub fn explain(&self, figures: &DbFigures) -> String {
        let context = context(figures);
        let result = self.eval(figures);
        let mut out = self.explain_cond(&self.expr, &context);
        if !self.is_comparison(&self.expr) && !matches!(self.expr.expr, Expr::Literal(_)) {
            out.push_str(" => ");
            out.push_str(&outcome(&result));
        }
        if let Err(e) = result {
            out.push_str(&format!(" ({e})"));
        }
        out
    }

    fn is_comparison(&self, expr: &IdedExpr) -> bool {
        match &expr.expr {
            Expr::Call(call) => {
                matches!(call.func_name.as_str(), "_<_" | "_<=_" | "_>_" | "_>=_")
                    || (matches!(call.func_name.as_str(), "_==_" | "_!=_")
                        && !call.args.iter().any(|a| self.is_condition(a)))
            }
            _ => false,
        }
    }

    /// Whether a part is a condition (the checker typed it): a literal, a comparison, a
    /// logical operator.
    fn is_condition(&self, expr: &IdedExpr) -> bool {
        match &expr.expr {
            Expr::Literal(LiteralValue::Boolean(_)) => true,
            Expr::Call(call) => match call.func_name.as_str() {
                "_&&_" | "_||_" | "!_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "_==_" | "_!=_" => true,
                "_?_:_" => call.args.get(1).is_some_and(|a| self.is_condition(a)),
                _ => false,
            },
            _ => false,
        }
    }

    fn explain_cond(&self, expr: &IdedExpr, context: &Context) -> String {
        let Expr::Call(call) = &expr.expr else {
            return self.text(expr);
        };
        let inner = |e| self.explain_cond(e, context);
        match (call.func_name.as_str(), call.args.as_slice()) {
            ("!_", [x]) => format!("!({})", inner(x)),
            (_, [l, r]) if self.is_comparison(expr) => {
                let (ld, rd) = (self.dim(l), self.dim(r));
                format!(
                    "{} {} {}: {}",
                    self.explain_side(l, rd, context),
                    check::symbol(&call.func_name).unwrap_or("?"),
                    self.explain_side(r, ld, context),
                    outcome(&self.truth(expr, context)),
                )
            }
            ("_&&_" | "_||_" | "_==_" | "_!=_", [l, r]) => format!(
                "({}) {} ({})",
                inner(l),
                check::symbol(&call.func_name).unwrap_or("?"),
                inner(r)
            ),
            _ => format!("{}: {}", self.text(expr), outcome(&self.truth(expr, context))),
        }
    }

    fn truth(&self, expr: &IdedExpr, context: &Context) -> Result<bool, RuleError> {
        match self.value(expr, context)? {
            Value::Bool(b) => Ok(b),
            other => Err(RuleError::Eval {
                rule: self.source.clone(),
                message: format!("{other:?} is not true or false"),
            }),
        }
    }

    /// `dbSize - dbSizeInUse = 240.0 MB`.
    fn explain_side(&self, expr: &IdedExpr, partner: Dim, context: &Context) -> String {
        let written = self.text(expr);
        // A literal, or sizes without variables (`100 * MB`), reads best as written.
        let names = check::names(expr);
        if matches!(expr.expr, Expr::Literal(_))
            || (!names.is_empty() && names.iter().all(|n| Variable::from_name(n).is_none()))
        {
            return written;
        }
        let dim = match self.dim(expr) {
            Dim::Plain => partner,
            dim => dim,
        };
        let value = match self.value(expr, context) {
            Ok(Value::Int(i)) => fmt_value(i as f64, dim, self.binary_units),
            Ok(Value::UInt(u)) => fmt_value(u as f64, dim, self.binary_units),
            Ok(Value::Float(f)) => fmt_value(f, dim, self.binary_units),
            Ok(other) => format!("{other:?}"),
            Err(RuleError::DivisionByZero { .. }) => "undefined (division by zero)".to_string(),
            Err(_) => "unknown".to_string(),
        };
        format!("{written} = {value}")
    }

    fn dim(&self, expr: &IdedExpr) -> Dim {
        match &expr.expr {
            Expr::Ident(name) => match Variable::from_name(name) {
                Some(Variable::DbQuotaUsage) => Dim::Ratio,
                Some(_) => Dim::Bytes,
                None => Dim::Bytes, // a size constant
            },
            Expr::Call(call) => match (call.func_name.as_str(), call.args.as_slice()) {
                ("_+_" | "_-_", [l, r]) => match (self.dim(l), self.dim(r)) {
                    (a, b) if a == b => a,
                    (Dim::Plain, b) => b,
                    (a, Dim::Plain) => a,
                    _ => Dim::Plain,
                },
                ("_*_", [l, r]) => match (self.dim(l), self.dim(r)) {
                    (Dim::Bytes, Dim::Bytes) => Dim::Plain,
                    (Dim::Bytes, _) | (_, Dim::Bytes) => Dim::Bytes,
                    (Dim::Ratio, _) | (_, Dim::Ratio) => Dim::Ratio,
                    _ => Dim::Plain,
                },
                // Bytes in a size unit: a plain count.
                ("_/_", [_, r]) if matches!(&r.expr, Expr::Ident(n) if Variable::from_name(n).is_none()) => {
                    Dim::Plain
                }
                ("_/_", [l, r]) => match (self.dim(l), self.dim(r)) {
                    (Dim::Bytes, Dim::Bytes) => Dim::Ratio,
                    (Dim::Bytes, _) => Dim::Bytes,
                    (Dim::Ratio, Dim::Plain) => Dim::Ratio,
                    _ => Dim::Plain,
                },
                ("-_" | "int" | "double", [x]) => self.dim(x),
                ("_?_:_", [_, a, _]) => self.dim(a),
                _ => Dim::Plain,
            },
            _ => Dim::Plain,
        }
    }
}

fn outcome(result: &Result<bool, RuleError>) -> String {
    match result {
        Ok(b) => b.to_string(),
        Err(_) => "unknown".to_string(),
    }
}

fn fmt_value(v: f64, dim: Dim, binary: bool) -> String {
    match dim {
        Dim::Plain => fmt_plain(v),
        Dim::Ratio => format!("{} ({:.1}%)", fmt_plain(v), v * 100.0),
        Dim::Bytes => fmt_bytes(v, binary),
    }
}

fn fmt_plain(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() && v.abs() >= 1e-3 && v.abs() < 1e15 {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:e}")
    }
}

fn fmt_bytes(v: f64, binary: bool) -> String {
    let (base, units) = if binary {
        (1024.0, ["KiB", "MiB", "GiB", "TiB", "PiB"])
    } else {
        (1000.0, ["KB", "MB", "GB", "TB", "PB"])
    };
    if !v.is_finite() || v.abs() < base {
        return format!("{} B", fmt_plain(v));
    }
    let mut x = v / base;
    let mut i = 0;
    while x.abs() >= base && i + 1 < units.len() {
        x /= base;
        i += 1;
    }
    // Four significant digits: 240.0 MB, 47.68 MB, 1.718 GB.
    let decimals = if x.abs() >= 100.0 {
        1
    } else if x.abs() >= 10.0 {
        2
    } else {
        3
    };
    format!("{x:.decimals$} {}", units[i])
}
