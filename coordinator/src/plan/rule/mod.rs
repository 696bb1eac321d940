//! Defrag rules (`etcdops defrag --rule EXPR`): a condition over a member's database
//! figures (`dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8`) that chooses which
//! members need a defrag. A small hand-written precedence-climbing parser, a typed
//! syntax tree (numbers and conditions cannot be mixed up once parsed), an evaluator,
//! and [`Rule::explain`] to show in a plan why a member was chosen.
//!
//! The variables are those of the etcd-defrag tool (`dbSize`, `dbSizeInUse`, `dbQuota`,
//! plus `dbSizeFree` and `dbQuotaUsage`), so its rules work unchanged; `%` is a percent
//! sign here (`80%` = 0.8), not modulo.
//!
//! Decisions:
//! - A quota of 0 means "unknown". A rule that needs `dbQuota` or `dbQuotaUsage` for a
//!   member without a quota evaluates to [`RuleError::Unknown`], unless the rest of the
//!   rule decides anyway (`&&`/`||` use three-valued logic: `unknown || true` is true,
//!   `unknown && false` is false), whatever the order of the operands.
//! - Division by zero is an error ([`RuleError::DivisionByZero`]), never infinity, and is
//!   treated like an unknown value by `&&`/`||`.
//! - Nesting (parentheses, unary operators, chains of binary operators) is bounded by
//!   [`MAX_DEPTH`], so no input can overflow the stack; no input panics.

mod lexer;
mod parser;
mod syntax;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use lexer::*;
use parser::*;
use syntax::*;

/// The deepest a rule may nest (parentheses, unary operators, operator chains).
pub const MAX_DEPTH: usize = 64;

/// What `etcdops defrag --help` says about `--rule`.
pub const RULE_HELP: &str = "\
A rule is a condition evaluated for each member; the members for which it is true are defragmented. \
Variables, from each member's status: dbSize (size of the database file, bytes), dbSizeInUse (bytes \
in use), dbSizeFree (dbSize - dbSizeInUse), dbQuota (the storage quota, bytes; 0 = unknown) and \
dbQuotaUsage (dbSize / dbQuota; 0.8 = 80%). Operators, loosest first: ||, &&, comparisons \
(< <= > >= == !=), + -, * /, then unary ! and -; parentheses group. Numbers are written 10, 2.5 or 1e6 \
and may carry a unit: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024), or % \
(80% = 0.8; % is not modulo); true and false are constants. For a member whose quota is unknown a rule \
that needs dbQuota or dbQuotaUsage is undecided (an error naming the member) unless the rest of the rule \
decides it; division by zero is an error. etcd-defrag rules work unchanged. Examples:
  dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8
  dbSizeFree > 1GiB && dbSizeFree / dbSize > 50%
  dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024";

/// The example shown when a rule is empty or not a condition.
const EXAMPLE: &str = "dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8";

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

/// A member's database figures, as its status reports them (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DbFigures {
    /// Size of the database file (`dbSize`).
    pub db_size: i64,
    /// Bytes of the file in use (`dbSizeInUse`).
    pub db_size_in_use: i64,
    /// The storage quota (`--quota-backend-bytes`); 0 = unknown.
    pub db_quota: i64,
}

/// A variable a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `dbSize`: size of the database file, bytes.
    DbSize,
    /// `dbSizeInUse`: bytes in use.
    DbSizeInUse,
    /// `dbSizeFree`: `dbSize - dbSizeInUse`, what a defrag would give back.
    DbSizeFree,
    /// `dbQuota`: the storage quota, bytes (unknown when the member reports 0).
    DbQuota,
    /// `dbQuotaUsage`: `dbSize / dbQuota`, a ratio (0.8 = 80%).
    DbQuotaUsage,
}

impl Variable {
    /// Every variable, in the order the help lists them.
    pub const ALL: [Variable; 5] = [
        Variable::DbSize,
        Variable::DbSizeInUse,
        Variable::DbSizeFree,
        Variable::DbQuota,
        Variable::DbQuotaUsage,
    ];

    /// The name a rule uses (`dbSizeInUse`).
    pub fn name(self) -> &'static str {
        match self {
            Variable::DbSize => "dbSize",
            Variable::DbSizeInUse => "dbSizeInUse",
            Variable::DbSizeFree => "dbSizeFree",
            Variable::DbQuota => "dbQuota",
            Variable::DbQuotaUsage => "dbQuotaUsage",
        }
    }

    /// The variable a rule names, exactly (names are case-sensitive).
    pub fn from_name(name: &str) -> Option<Variable> {
        Variable::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Its value for a member; `Unknown` for the quota ones when the quota is not known.
    pub fn value(self, figures: &DbFigures) -> Result<f64, RuleError> {
        let quota = || {
            if figures.db_quota > 0 {
                Ok(figures.db_quota as f64)
            } else {
                Err(RuleError::Unknown { variable: self })
            }
        };
        Ok(match self {
            Variable::DbSize => figures.db_size as f64,
            Variable::DbSizeInUse => figures.db_size_in_use as f64,
            Variable::DbSizeFree => figures.db_size as f64 - figures.db_size_in_use as f64,
            Variable::DbQuota => quota()?,
            Variable::DbQuotaUsage => figures.db_size as f64 / quota()?,
        })
    }

    fn dim(self) -> Dim {
        match self {
            Variable::DbQuotaUsage => Dim::Ratio,
            _ => Dim::Bytes,
        }
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operand is: a number or a condition (true or false).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Condition,
}

impl Kind {
    fn hint(self) -> &'static str {
        match self {
            Kind::Number => "compare it to make a condition, e.g. `dbSizeFree > 100MB`",
            Kind::Condition => {
                "only numbers are added, multiplied or compared with < >; join conditions with && or ||"
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Number => "a number",
            Kind::Condition => "a condition (true or false)",
        })
    }
}

/// Why a rule did not parse, or could not be decided for a member. Parse errors quote the
/// rule and give the 1-based column (in characters) of the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the rule is empty; write a condition, e.g. `{EXAMPLE}`")]
    Empty,
    #[error(
        "rule `{rule}`: unknown size unit `{unit}` at column {column}; use B, KB, MB, GB, TB (decimal) \
         or KiB, MiB, GiB, TiB (binary), or % (80% = 0.8){}",
        did_you_mean(.suggestion)
    )]
    UnknownUnit {
        rule: String,
        unit: String,
        column: usize,
        suggestion: Option<&'static str>,
    },
    #[error(
        "rule `{rule}`: unknown variable `{name}` at column {column}; known: dbSize, dbSizeInUse, \
         dbSizeFree, dbQuota, dbQuotaUsage{}",
        did_you_mean(.suggestion)
    )]
    UnknownVariable {
        rule: String,
        name: String,
        column: usize,
        suggestion: Option<&'static str>,
    },
    #[error("rule `{rule}`: bad number `{text}` at column {column}: {reason}")]
    BadNumber {
        rule: String,
        text: String,
        column: usize,
        reason: &'static str,
    },
    #[error("rule `{rule}`: unexpected `{found}` at column {column}{hint}")]
    UnexpectedChar {
        rule: String,
        found: char,
        column: usize,
        /// Empty, or `; ` and what to write instead.
        hint: &'static str,
    },
    #[error("rule `{rule}`: expected {expected} at column {column}, found `{found}`")]
    UnexpectedToken {
        rule: String,
        expected: &'static str,
        found: String,
        column: usize,
    },
    #[error("rule `{rule}`: unexpected end of the rule; expected {expected}")]
    UnexpectedEnd { rule: String, expected: &'static str },
    #[error("rule `{rule}`: unbalanced parenthesis: the `(` at column {column} is never closed")]
    UnclosedParen { rule: String, column: usize },
    #[error("rule `{rule}`: unbalanced parenthesis: the `)` at column {column} has no matching `(`")]
    UnmatchedParen { rule: String, column: usize },
    #[error(
        "rule `{rule}`: unexpected `{found}` at column {column} after a complete condition; \
         join conditions with && or ||"
    )]
    TrailingInput {
        rule: String,
        found: String,
        column: usize,
    },
    #[error(
        "rule `{rule}`: `{operator}` needs {expected}, but `{operand}` at column {column} is {found}; {}",
        .found.hint()
    )]
    TypeMismatch {
        rule: String,
        operator: &'static str,
        expected: &'static str,
        operand: String,
        column: usize,
        found: Kind,
    },
    #[error("rule `{rule}`: the rule must be a condition, e.g. `{EXAMPLE}`, but it computes a number")]
    NotACondition { rule: String },
    #[error("rule `{rule}`: nests deeper than {max} levels at column {column}")]
    TooDeep { rule: String, column: usize, max: usize },
    /// Evaluation: the rule needs a variable this member's figures do not give.
    #[error("`{variable}` is unknown: the member's storage quota is not known (dbQuota = 0)")]
    Unknown { variable: Variable },
    /// Evaluation: a divisor was zero.
    #[error("rule `{rule}`: division by zero in `{expr}` at column {column}")]
    DivisionByZero {
        rule: String,
        expr: String,
        column: usize,
    },
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// A parsed defrag rule. Keeps its source text, which `Display` prints.
#[derive(Debug, Clone)]
pub struct Rule {
    source: String,
    root: CondNode,
    /// Whether the rule writes binary units (`MiB`): `explain` then prints sizes that way.
    binary_units: bool,
}

impl Rule {
    /// Parses a rule; the error quotes it and points at the column at fault.
    pub fn parse(source: &str) -> Result<Rule, RuleError> {
        if source.trim().is_empty() {
            return Err(RuleError::Empty);
        }
        let mut parser = Parser::new(source)?;
        let expr = parser.expr(0)?;
        match parser.tok.kind {
            TokKind::End => {}
            TokKind::RParen => {
                return Err(RuleError::UnmatchedParen {
                    rule: source.to_string(),
                    column: parser.column(parser.tok.span.0),
                });
            }
            _ => {
                return Err(RuleError::TrailingInput {
                    rule: source.to_string(),
                    found: parser.text(parser.tok.span).to_string(),
                    column: parser.column(parser.tok.span.0),
                });
            }
        }
        let root = match expr {
            Expr::Cond(c) => c,
            Expr::Num(_) => {
                return Err(RuleError::NotACondition {
                    rule: source.to_string(),
                });
            }
        };
        Ok(Rule {
            source: source.to_string(),
            root,
            binary_units: parser.lexer.binary_units,
        })
    }

    /// The rule as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the member with these figures needs a defrag. Errors are evaluation errors
    /// only: [`RuleError::Unknown`] (the rule needs the quota and this member's is not
    /// known, and the rest of the rule does not decide) or [`RuleError::DivisionByZero`].
    pub fn eval(&self, figures: &DbFigures) -> Result<bool, RuleError> {
        self.cond(&self.root, figures)
    }

    /// One line for a human reading a plan: the rule with each compared value computed,
    /// and the outcome, e.g. `dbSize - dbSizeInUse = 240.0 MB > 100MB: true`.
    pub fn explain(&self, figures: &DbFigures) -> String {
        let result = self.eval(figures);
        let mut out = self.explain_cond(&self.root, figures);
        if !matches!(self.root.cond, Cond::Cmp(..) | Cond::Lit(_)) {
            out.push_str(" => ");
            out.push_str(&outcome(&result));
        }
        if let Err(e) = result {
            out.push_str(&format!(" ({e})"));
        }
        out
    }

    fn num(&self, node: &NumNode, figures: &DbFigures) -> Result<f64, RuleError> {
        Ok(match &node.num {
            Num::Lit(v) => *v,
            Num::Var(v) => v.value(figures)?,
            Num::Neg(x) => -self.num(x, figures)?,
            Num::Arith(op, l, r) => {
                let (l, r) = (self.num(l, figures)?, self.num(r, figures)?);
                match op {
                    BinOp::Add => l + r,
                    BinOp::Sub => l - r,
                    BinOp::Mul => l * r,
                    _ => {
                        if r == 0.0 {
                            return Err(RuleError::DivisionByZero {
                                rule: self.source.clone(),
                                expr: text(&self.source, node.span).to_string(),
                                column: column(&self.source, node.span.0),
                            });
                        }
                        l / r
                    }
                }
            }
        })
    }

    fn cond(&self, node: &CondNode, figures: &DbFigures) -> Result<bool, RuleError> {
        match &node.cond {
            Cond::Lit(b) => Ok(*b),
            Cond::Not(x) => Ok(!self.cond(x, figures)?),
            Cond::Cmp(op, l, r) => {
                let (l, r) = (self.num(l, figures)?, self.num(r, figures)?);
                Ok(match op {
                    BinOp::Lt => l < r,
                    BinOp::Le => l <= r,
                    BinOp::Gt => l > r,
                    BinOp::Ge => l >= r,
                    BinOp::Eq => l == r,
                    _ => l != r,
                })
            }
            Cond::Same(op, l, r) => {
                let same = self.cond(l, figures)? == self.cond(r, figures)?;
                Ok(if *op == BinOp::Eq { same } else { !same })
            }
            Cond::Logic(op, l, r) => {
                // Three-valued: a side that decides wins over an unknown other side.
                let decisive = *op == BinOp::Or;
                let l = self.cond(l, figures);
                if l == Ok(decisive) {
                    return Ok(decisive);
                }
                match (l, self.cond(r, figures)) {
                    (_, Ok(r)) if r == decisive => Ok(decisive),
                    (Ok(_), Ok(_)) => Ok(!decisive),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
        }
    }

    fn explain_cond(&self, node: &CondNode, figures: &DbFigures) -> String {
        match &node.cond {
            Cond::Lit(b) => b.to_string(),
            Cond::Not(x) => format!("!({})", self.explain_cond(x, figures)),
            Cond::Cmp(op, l, r) => format!(
                "{} {} {}: {}",
                self.explain_side(l, r.dim, figures),
                op.symbol(),
                self.explain_side(r, l.dim, figures),
                outcome(&self.cond(node, figures)),
            ),
            Cond::Same(op, l, r) | Cond::Logic(op, l, r) => format!(
                "({}) {} ({})",
                self.explain_cond(l, figures),
                op.symbol(),
                self.explain_cond(r, figures)
            ),
        }
    }

    /// `dbSize - dbSizeInUse = 240.0 MB`; a literal as written.
    fn explain_side(&self, node: &NumNode, partner: Dim, figures: &DbFigures) -> String {
        let written = text(&self.source, node.span);
        if matches!(node.num, Num::Lit(_)) {
            return written.to_string();
        }
        let dim = if node.dim == Dim::Plain { partner } else { node.dim };
        let value = match self.num(node, figures) {
            Ok(v) => fmt_value(v, dim, self.binary_units),
            Err(RuleError::DivisionByZero { .. }) => "undefined (division by zero)".to_string(),
            Err(_) => "unknown".to_string(),
        };
        format!("{written} = {value}")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Rule, RuleError> {
        Rule::parse(s)
    }
}

/// A rule is stored (e.g. in a persisted plan) as its source text.
impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Rule, D::Error> {
        let source = String::deserialize(deserializer)?;
        Rule::parse(&source).map_err(serde::de::Error::custom)
    }
}

fn outcome(result: &Result<bool, RuleError>) -> String {
    match result {
        Ok(b) => b.to_string(),
        Err(_) => "unknown".to_string(),
    }
}

// ---- values and their display ----

/// What a number measures, only to print it well in `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Plain,
    Bytes,
    Ratio,
}

impl Dim {
    fn of(op: BinOp, l: Dim, r: Dim) -> Dim {
        use Dim::*;
        match op {
            BinOp::Add | BinOp::Sub => match (l, r) {
                (a, b) if a == b => a,
                (Plain, b) => b,
                (a, Plain) => a,
                _ => Plain,
            },
            BinOp::Mul => match (l, r) {
                (Bytes, Bytes) => Plain,
                (Bytes, _) | (_, Bytes) => Bytes,
                (Ratio, _) | (_, Ratio) => Ratio,
                _ => Plain,
            },
            _ => match (l, r) {
                (Bytes, Bytes) => Ratio,
                (Bytes, _) => Bytes,
                (Ratio, Plain) => Ratio,
                _ => Plain,
            },
        }
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
