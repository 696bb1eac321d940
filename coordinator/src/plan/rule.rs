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

use std::fmt;
use std::str::FromStr;

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

// ---- syntax tree ----

/// Byte offsets `[start, end)` into the source.
type Span = (usize, usize);

#[derive(Debug, Clone)]
struct NumNode {
    num: Num,
    span: Span,
    dim: Dim,
    depth: usize,
}

#[derive(Debug, Clone)]
enum Num {
    Lit(f64),
    Var(Variable),
    Neg(Box<NumNode>),
    /// `+ - * /`.
    Arith(BinOp, Box<NumNode>, Box<NumNode>),
}

#[derive(Debug, Clone)]
struct CondNode {
    cond: Cond,
    span: Span,
    depth: usize,
}

#[derive(Debug, Clone)]
enum Cond {
    Lit(bool),
    Not(Box<CondNode>),
    /// Numbers compared: `< <= > >= == !=`.
    Cmp(BinOp, Box<NumNode>, Box<NumNode>),
    /// Conditions compared: `== !=`.
    Same(BinOp, Box<CondNode>, Box<CondNode>),
    /// `&& ||`.
    Logic(BinOp, Box<CondNode>, Box<CondNode>),
}

/// What the parser holds while it has not yet seen what an operand is used for.
enum Expr {
    Num(NumNode),
    Cond(CondNode),
}

impl Expr {
    fn span(&self) -> Span {
        match self {
            Expr::Num(n) => n.span,
            Expr::Cond(c) => c.span,
        }
    }

    fn depth(&self) -> usize {
        match self {
            Expr::Num(n) => n.depth,
            Expr::Cond(c) => c.depth,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Expr::Num(_) => Kind::Number,
            Expr::Cond(_) => Kind::Condition,
        }
    }

    fn with_span(mut self, span: Span) -> Expr {
        match &mut self {
            Expr::Num(n) => n.span = span,
            Expr::Cond(c) => c.span = span,
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// Binding strength, loosest first (as in Go, whose rules etcd-defrag evaluates).
    fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div => 5,
        }
    }
}

// ---- lexer ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum TokKind {
    Num(f64, Dim),
    Ident,
    Op(BinOp),
    Not,
    LParen,
    RParen,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: TokKind,
    span: Span,
}

fn column(source: &str, byte: usize) -> usize {
    source.get(..byte).map_or(0, |s| s.chars().count()) + 1
}

fn text(source: &str, span: Span) -> &str {
    source.get(span.0..span.1).unwrap_or("")
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    binary_units: bool,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().nth(ahead))
    }

    fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while let Some(c) = self.peek() {
            if !pred(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn unexpected(&self, found: char, at: usize, hint: &'static str) -> RuleError {
        RuleError::UnexpectedChar {
            rule: self.src.to_string(),
            found,
            column: column(self.src, at),
            hint,
        }
    }

    fn next_token(&mut self) -> Result<Token, RuleError> {
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
    fn number(&mut self) -> Result<Token, RuleError> {
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

fn suggest_unit(unit: &str) -> Option<&'static str> {
    if unit.is_empty() {
        return None;
    }
    let lower = unit.to_ascii_lowercase();
    UNITS.iter().map(|(u, _)| *u).find(|u| {
        let u_lower = u.to_ascii_lowercase();
        u_lower == lower || u_lower == format!("{lower}b")
    })
}

fn suggest_variable(name: &str) -> Option<&'static str> {
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

// ---- parser ----

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Token,
    /// Current nesting of parentheses and unary operators.
    depth: usize,
}

const OPERAND: &str = "a number, a variable, true, false, `!`, `-` or `(`";

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Parser<'a>, RuleError> {
        let mut lexer = Lexer {
            src,
            pos: 0,
            binary_units: false,
        };
        let tok = lexer.next_token()?;
        Ok(Parser { lexer, tok, depth: 0 })
    }

    fn rule(&self) -> String {
        self.lexer.src.to_string()
    }

    fn column(&self, byte: usize) -> usize {
        column(self.lexer.src, byte)
    }

    fn text(&self, span: Span) -> &'a str {
        text(self.lexer.src, span)
    }

    fn advance(&mut self) -> Result<(), RuleError> {
        self.tok = self.lexer.next_token()?;
        Ok(())
    }

    fn too_deep(&self, at: usize) -> RuleError {
        RuleError::TooDeep {
            rule: self.rule(),
            column: self.column(at),
            max: MAX_DEPTH,
        }
    }

    fn enter(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep(self.tok.span.0));
        }
        Ok(())
    }

    /// Precedence climbing: operands joined by operators binding at least `min_prec`.
    fn expr(&mut self, min_prec: u8) -> Result<Expr, RuleError> {
        let mut lhs = self.unary()?;
        while let TokKind::Op(op) = self.tok.kind {
            if op.precedence() < min_prec {
                break;
            }
            let op_at = self.tok.span.0;
            self.advance()?;
            let rhs = self.expr(op.precedence() + 1)?;
            lhs = self.binary(op, op_at, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, RuleError> {
        let start = self.tok.span.0;
        let (kind, operator) = match self.tok.kind {
            TokKind::Not => (Kind::Condition, "!"),
            TokKind::Op(BinOp::Sub) => (Kind::Number, "-"),
            _ => return self.primary(),
        };
        self.enter()?;
        self.advance()?;
        let operand = self.unary()?;
        self.depth -= 1;
        let span = (start, operand.span().1);
        let depth = operand.depth() + 1;
        Ok(match (kind, operand) {
            (Kind::Condition, Expr::Cond(c)) => Expr::Cond(CondNode {
                cond: Cond::Not(Box::new(c)),
                span,
                depth,
            }),
            (Kind::Number, Expr::Num(n)) => Expr::Num(NumNode {
                dim: n.dim,
                num: Num::Neg(Box::new(n)),
                span,
                depth,
            }),
            (_, operand) => {
                let expected = if kind == Kind::Number {
                    "a number after it"
                } else {
                    "a condition after it"
                };
                return Err(self.mismatch(operator, expected, &operand));
            }
        })
    }

    fn primary(&mut self) -> Result<Expr, RuleError> {
        let tok = self.tok;
        let expr = match tok.kind {
            TokKind::Num(value, dim) => Expr::Num(NumNode {
                num: Num::Lit(value),
                span: tok.span,
                dim,
                depth: 1,
            }),
            TokKind::Ident => {
                let name = self.text(tok.span);
                let cond = |b| {
                    Expr::Cond(CondNode {
                        cond: Cond::Lit(b),
                        span: tok.span,
                        depth: 1,
                    })
                };
                match name {
                    "true" => cond(true),
                    "false" => cond(false),
                    _ => match Variable::from_name(name) {
                        Some(v) => Expr::Num(NumNode {
                            num: Num::Var(v),
                            span: tok.span,
                            dim: v.dim(),
                            depth: 1,
                        }),
                        None => {
                            return Err(RuleError::UnknownVariable {
                                rule: self.rule(),
                                name: name.to_string(),
                                column: self.column(tok.span.0),
                                suggestion: suggest_variable(name),
                            });
                        }
                    },
                }
            }
            TokKind::LParen => {
                self.enter()?;
                self.advance()?;
                let inner = self.expr(0)?;
                self.depth -= 1;
                match self.tok.kind {
                    TokKind::RParen => {}
                    TokKind::End => {
                        return Err(RuleError::UnclosedParen {
                            rule: self.rule(),
                            column: self.column(tok.span.0),
                        });
                    }
                    _ => return Err(self.unexpected_token("an operator or `)`")),
                }
                let expr = inner.with_span((tok.span.0, self.tok.span.1));
                self.advance()?;
                return Ok(expr);
            }
            TokKind::End => {
                return Err(RuleError::UnexpectedEnd {
                    rule: self.rule(),
                    expected: OPERAND,
                });
            }
            TokKind::Op(_) | TokKind::Not | TokKind::RParen => return Err(self.unexpected_token(OPERAND)),
        };
        self.advance()?;
        Ok(expr)
    }

    fn unexpected_token(&self, expected: &'static str) -> RuleError {
        RuleError::UnexpectedToken {
            rule: self.rule(),
            expected,
            found: self.text(self.tok.span).to_string(),
            column: self.column(self.tok.span.0),
        }
    }

    fn mismatch(&self, operator: &'static str, expected: &'static str, operand: &Expr) -> RuleError {
        RuleError::TypeMismatch {
            rule: self.rule(),
            operator,
            expected,
            operand: self.text(operand.span()).to_string(),
            column: self.column(operand.span().0),
            found: operand.kind(),
        }
    }

    fn binary(&self, op: BinOp, op_at: usize, lhs: Expr, rhs: Expr) -> Result<Expr, RuleError> {
        let span = (lhs.span().0, rhs.span().1);
        let depth = lhs.depth().max(rhs.depth()) + 1;
        if depth > MAX_DEPTH {
            return Err(self.too_deep(op_at));
        }
        let cond = |cond| Ok(Expr::Cond(CondNode { cond, span, depth }));
        match op {
            BinOp::Or | BinOp::And => match (lhs, rhs) {
                (Expr::Cond(l), Expr::Cond(r)) => cond(Cond::Logic(op, Box::new(l), Box::new(r))),
                (Expr::Num(l), _) => {
                    Err(self.mismatch(op.symbol(), "a condition on each side", &Expr::Num(l)))
                }
                (_, r) => Err(self.mismatch(op.symbol(), "a condition on each side", &r)),
            },
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => match (lhs, rhs) {
                (Expr::Num(l), Expr::Num(r)) => Ok(Expr::Num(NumNode {
                    dim: Dim::of(op, l.dim, r.dim),
                    num: Num::Arith(op, Box::new(l), Box::new(r)),
                    span,
                    depth,
                })),
                (Expr::Cond(l), _) => {
                    Err(self.mismatch(op.symbol(), "a number on each side", &Expr::Cond(l)))
                }
                (_, r) => Err(self.mismatch(op.symbol(), "a number on each side", &r)),
            },
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => match (lhs, rhs) {
                (Expr::Num(l), Expr::Num(r)) => cond(Cond::Cmp(op, Box::new(l), Box::new(r))),
                (Expr::Cond(l), Expr::Cond(r)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                    cond(Cond::Same(op, Box::new(l), Box::new(r)))
                }
                (Expr::Cond(l), _) if !matches!(op, BinOp::Eq | BinOp::Ne) => {
                    Err(self.mismatch(op.symbol(), "a number on each side", &Expr::Cond(l)))
                }
                (Expr::Num(_), r) => Err(self.mismatch(op.symbol(), "a number on each side", &r)),
                (Expr::Cond(_), r) => Err(self.mismatch(op.symbol(), "a condition on each side", &r)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: i64 = 1_000_000;

    fn figures(db_size: i64, db_size_in_use: i64, db_quota: i64) -> DbFigures {
        DbFigures {
            db_size,
            db_size_in_use,
            db_quota,
        }
    }

    fn eval(rule: &str, f: &DbFigures) -> Result<bool, RuleError> {
        Rule::parse(rule)
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
            .eval(f)
    }

    fn parse_err(rule: &str) -> String {
        match Rule::parse(rule) {
            Ok(_) => panic!("{rule:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn precedence_and_associativity() {
        let f = DbFigures::default();
        let cases = [
            ("1 + 2 * 3 == 7", true),
            ("(1 + 2) * 3 == 9", true),
            ("10 - 4 - 3 == 3", true),
            ("24 / 4 / 2 == 3", true),
            ("2 * 3 / 2 == 3", true),
            ("-2 * 3 == -6", true),
            ("- -2 == 2", true),
            ("-(1 + 2) == -3", true),
            ("1 - -1 == 2", true),
            ("1 + 1 > 1 * 1 + 0.5", true),
            ("true || false && false", true),
            ("(true || false) && false", false),
            ("!true || true", true),
            ("!(true || true)", false),
            ("!false && false", false),
            ("!!true", true),
            ("1 < 2 == true", true),
            ("(1 < 2) != (2 < 1)", true),
            ("2 > 1 && 3 > 2 || 1 > 2", true),
            ("1 > 2 || 3 > 2 && 2 > 3", false),
            ("true", true),
            ("false", false),
            ("((((1 < 2))))", true),
            ("1<2&&2<3", true),
        ];
        for (rule, want) in cases {
            assert_eq!(eval(rule, &f), Ok(want), "{rule}");
        }
    }

    #[test]
    fn numbers_units_and_percent() {
        let f = DbFigures::default();
        let cases = [
            ("1", "1"),
            ("2.5", "2.5"),
            ("1e6", "1000000"),
            ("1E6", "1000000"),
            ("2.5e-1", "0.25"),
            ("1e+3", "1000"),
            ("7B", "7"),
            ("1KB", "1000"),
            ("1.5KB", "1500"),
            ("1MB", "1000000"),
            ("1GB", "1000000000"),
            ("2TB", "2000000000000"),
            ("1KiB", "1024"),
            ("1.5KiB", "1536"),
            ("1MiB", "1048576"),
            ("1GiB", "1073741824"),
            ("2TiB", "2199023255552"),
            ("100 MB", "100000000"),
            ("1e3KB", "1000000"),
            ("80%", "0.8"),
            ("100%", "1"),
            ("12.5%", "0.125"),
        ];
        for (literal, value) in cases {
            let rule = format!("{literal} == {value}");
            assert_eq!(eval(&rule, &f), Ok(true), "{rule}");
        }
    }

    #[test]
    fn each_variable() {
        let f = figures(300, 100, 1000);
        let cases = [
            ("dbSize == 300", true),
            ("dbSizeInUse == 100", true),
            ("dbSizeFree == 200", true),
            ("dbQuota == 1000", true),
            ("dbQuotaUsage == 0.3", true),
            ("dbQuotaUsage == 30%", true),
            ("dbSizeFree == dbSize - dbSizeInUse", true),
        ];
        for (rule, want) in cases {
            assert_eq!(eval(rule, &f), Ok(want), "{rule}");
        }
    }

    #[test]
    fn the_issues_example_and_etcd_defrag_rules() {
        let issue = "dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8";
        let defrag = "dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024";
        let cases = [
            (issue, figures(340 * MB, 100 * MB, 2_000 * MB), Ok(true)), // free space
            (issue, figures(110 * MB, 100 * MB, 120 * MB), Ok(true)),   // near the quota
            (issue, figures(110 * MB, 100 * MB, 2_000 * MB), Ok(false)),
            (issue, figures(340 * MB, 100 * MB, 0), Ok(true)), // decided without the quota
            (
                issue,
                figures(110 * MB, 100 * MB, 0),
                Err(RuleError::Unknown {
                    variable: Variable::DbQuotaUsage,
                }),
            ),
            (defrag, figures(1_700 * MB, 1_690 * MB, 2_000 * MB), Ok(true)),
            (defrag, figures(400 * MB, 100 * MB, 2_000 * MB), Ok(true)),
            (defrag, figures(400 * MB, 300 * MB, 2_000 * MB), Ok(false)),
        ];
        for (rule, f, want) in cases {
            assert_eq!(eval(rule, &f), want, "{rule} with {f:?}");
        }
    }

    #[test]
    fn unknown_quota_uses_three_valued_logic() {
        let f = figures(10, 5, 0);
        let unknown = |variable| Err(RuleError::Unknown { variable });
        let cases = [
            ("dbQuota > 1", unknown(Variable::DbQuota)),
            ("dbQuotaUsage > 0.5", unknown(Variable::DbQuotaUsage)),
            ("!(dbQuotaUsage > 0.5)", unknown(Variable::DbQuotaUsage)),
            ("dbQuotaUsage > 0.5 || true", Ok(true)),
            ("true || dbQuotaUsage > 0.5", Ok(true)),
            ("dbQuotaUsage > 0.5 && false", Ok(false)),
            ("false && dbQuotaUsage > 0.5", Ok(false)),
            ("dbQuotaUsage > 0.5 && true", unknown(Variable::DbQuotaUsage)),
            ("dbQuotaUsage > 0.5 || false", unknown(Variable::DbQuotaUsage)),
            ("dbSizeFree > 1 || dbQuota > 1", Ok(true)),
        ];
        for (rule, want) in cases {
            assert_eq!(eval(rule, &f), want, "{rule}");
        }
    }

    #[test]
    fn division_by_zero_is_an_error() {
        let f = figures(0, 0, 100);
        let rule = "dbSizeFree / dbSize > 50%";
        assert_eq!(
            eval(rule, &f).map_err(|e| e.to_string()),
            Err(
                "rule `dbSizeFree / dbSize > 50%`: division by zero in `dbSizeFree / dbSize` at column 1"
                    .into()
            )
        );
        assert_eq!(eval("1 / (2 - 2) > 0 || true", &f), Ok(true));
        assert!(eval("1 / (2 - 2) > 0 && true", &f).is_err());
        assert_eq!(eval("0 / 5 == 0", &f), Ok(true));
    }

    #[test]
    fn explains_why() {
        let f = figures(340 * MB, 100 * MB, 2_000 * MB);
        let cases = [
            (
                "dbSize - dbSizeInUse > 100MB",
                "dbSize - dbSizeInUse = 240.0 MB > 100MB: true",
            ),
            (
                "dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8",
                "(dbSize - dbSizeInUse = 240.0 MB > 100MB: true) || (dbQuotaUsage = 0.17 (17.0%) > 0.8: false) => true",
            ),
            ("dbSizeFree > 200MiB", "dbSizeFree = 228.9 MiB > 200MiB: true"),
            (
                "dbSize > dbQuota * 80%",
                "dbSize = 340.0 MB > dbQuota * 80% = 1.600 GB: false",
            ),
            ("dbSize >= 1 B", "dbSize = 340.0 MB >= 1 B: true"),
            (
                "dbSize > 200*1024*1024",
                "dbSize = 340.0 MB > 200*1024*1024 = 209.7 MB: true",
            ),
            ("dbSizeInUse < 900", "dbSizeInUse = 100.0 MB < 900: false"),
            ("!(dbQuota >= 1GB)", "!(dbQuota = 2.000 GB >= 1GB: true) => false"),
            ("true", "true"),
        ];
        for (rule, want) in cases {
            let rule = Rule::parse(rule).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rule.explain(&f), want);
        }
        let no_quota = figures(110 * MB, 100 * MB, 0);
        let rule = Rule::parse("dbSizeFree > 100MB || dbQuotaUsage > 0.8").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rule.explain(&no_quota),
            "(dbSizeFree = 10.00 MB > 100MB: false) || (dbQuotaUsage = unknown > 0.8: unknown) => unknown \
             (`dbQuotaUsage` is unknown: the member's storage quota is not known (dbQuota = 0))"
        );
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                "",
                "the rule is empty; write a condition, e.g. `dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8`",
            ),
            (
                "   ",
                "the rule is empty; write a condition, e.g. `dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8`",
            ),
            (
                "dbSize > 100XB",
                "rule `dbSize > 100XB`: unknown size unit `XB` at column 13; use B, KB, MB, GB, TB (decimal) \
                 or KiB, MiB, GiB, TiB (binary), or % (80% = 0.8)",
            ),
            (
                "dbSize > 100mb",
                "rule `dbSize > 100mb`: unknown size unit `mb` at column 13; use B, KB, MB, GB, TB (decimal) \
                 or KiB, MiB, GiB, TiB (binary), or % (80% = 0.8) (did you mean MB?)",
            ),
            (
                "dbsize > 1",
                "rule `dbsize > 1`: unknown variable `dbsize` at column 1; known: dbSize, dbSizeInUse, \
                 dbSizeFree, dbQuota, dbQuotaUsage (did you mean dbSize?)",
            ),
            (
                "dbQuotaUse > 1",
                "rule `dbQuotaUse > 1`: unknown variable `dbQuotaUse` at column 1; known: dbSize, dbSizeInUse, \
                 dbSizeFree, dbQuota, dbQuotaUsage (did you mean dbQuotaUsage?)",
            ),
            (
                "size > 1",
                "rule `size > 1`: unknown variable `size` at column 1; known: dbSize, dbSizeInUse, \
                 dbSizeFree, dbQuota, dbQuotaUsage (did you mean dbSize?)",
            ),
            (
                "revision > 1",
                "rule `revision > 1`: unknown variable `revision` at column 1; known: dbSize, dbSizeInUse, \
                 dbSizeFree, dbQuota, dbQuotaUsage",
            ),
            (
                "dbSize > 1 || Not true",
                "rule `dbSize > 1 || Not true`: unknown variable `Not` at column 15; known: dbSize, \
                 dbSizeInUse, dbSizeFree, dbQuota, dbQuotaUsage (did you mean `!`?)",
            ),
            (
                "dbSize > 1 and true",
                "rule `dbSize > 1 and true`: unexpected `and` at column 12 after a complete condition; \
                 join conditions with && or ||",
            ),
            (
                "dbSize >",
                "rule `dbSize >`: unexpected end of the rule; expected a number, a variable, true, false, \
                 `!`, `-` or `(`",
            ),
            (
                "(dbSize > 1",
                "rule `(dbSize > 1`: unbalanced parenthesis: the `(` at column 1 is never closed",
            ),
            (
                "dbSize > 1)",
                "rule `dbSize > 1)`: unbalanced parenthesis: the `)` at column 11 has no matching `(`",
            ),
            (
                "dbSize > 1 2",
                "rule `dbSize > 1 2`: unexpected `2` at column 12 after a complete condition; \
                 join conditions with && or ||",
            ),
            (
                "dbSize > > 1",
                "rule `dbSize > > 1`: expected a number, a variable, true, false, `!`, `-` or `(` at column 10, \
                 found `>`",
            ),
            (
                "()",
                "rule `()`: expected a number, a variable, true, false, `!`, `-` or `(` at column 2, found `)`",
            ),
            (
                "(dbSize > 1 dbSize)",
                "rule `(dbSize > 1 dbSize)`: expected an operator or `)` at column 13, found `dbSize`",
            ),
            (
                "dbSize",
                "rule `dbSize`: the rule must be a condition, e.g. \
                 `dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8`, but it computes a number",
            ),
            (
                "dbSize && 1",
                "rule `dbSize && 1`: `&&` needs a condition on each side, but `dbSize` at column 1 is a number; \
                 compare it to make a condition, e.g. `dbSizeFree > 100MB`",
            ),
            (
                "1 + (2 > 1)",
                "rule `1 + (2 > 1)`: `+` needs a number on each side, but `(2 > 1)` at column 5 is a condition \
                 (true or false); only numbers are added, multiplied or compared with < >; join conditions \
                 with && or ||",
            ),
            (
                "1 < 2 < 3",
                "rule `1 < 2 < 3`: `<` needs a number on each side, but `1 < 2` at column 1 is a condition \
                 (true or false); only numbers are added, multiplied or compared with < >; join conditions \
                 with && or ||",
            ),
            (
                "!dbSize",
                "rule `!dbSize`: `!` needs a condition after it, but `dbSize` at column 2 is a number; \
                 compare it to make a condition, e.g. `dbSizeFree > 100MB`",
            ),
            (
                "dbSize = 1",
                "rule `dbSize = 1`: unexpected `=` at column 8; write `==` to compare",
            ),
            (
                "dbSize > 1 & true",
                "rule `dbSize > 1 & true`: unexpected `&` at column 12; write `&&` for and",
            ),
            (
                "dbSize % 2 == 0",
                "rule `dbSize % 2 == 0`: unexpected `%` at column 8; `%` is a percent sign right after a number \
                 (80% = 0.8); there is no modulo",
            ),
            (
                "dbSize > 100 mb",
                "rule `dbSize > 100 mb`: unknown size unit `mb` at column 14; use B, KB, MB, GB, TB (decimal) \
                 or KiB, MiB, GiB, TiB (binary), or % (80% = 0.8) (did you mean MB?)",
            ),
            (
                "dbSize > 100Mi",
                "rule `dbSize > 100Mi`: unknown size unit `Mi` at column 13; use B, KB, MB, GB, TB (decimal) \
                 or KiB, MiB, GiB, TiB (binary), or % (80% = 0.8) (did you mean MiB?)",
            ),
            (
                "dbSize > 1.",
                "rule `dbSize > 1.`: bad number `1.` at column 10: expected digits after the decimal point",
            ),
            (
                "dbSize > 1e999",
                "rule `dbSize > 1e999`: bad number `1e999` at column 10: too large",
            ),
            (
                "dbSize > 1 ; true",
                "rule `dbSize > 1 ; true`: unexpected `;` at column 12",
            ),
            (
                "dé > 1",
                "rule `dé > 1`: unknown variable `dé` at column 1; known: dbSize, dbSizeInUse, \
                 dbSizeFree, dbQuota, dbQuotaUsage",
            ),
            ("1 > 2 && ☃", "rule `1 > 2 && ☃`: unexpected `☃` at column 10"),
            ("☃ > 1e9XB", "rule `☃ > 1e9XB`: unexpected `☃` at column 1"),
            (
                "dbSize > 1 || true == 1",
                "rule `dbSize > 1 || true == 1`: `==` needs a condition on each side, but `1` at column 23 \
                 is a number; compare it to make a condition, e.g. `dbSizeFree > 100MB`",
            ),
            (
                "1 <= (2 > 1)",
                "rule `1 <= (2 > 1)`: `<=` needs a number on each side, but `(2 > 1)` at column 6 is a \
                 condition (true or false); only numbers are added, multiplied or compared with < >; join \
                 conditions with && or ||",
            ),
        ];
        for (rule, want) in cases {
            assert_eq!(parse_err(rule), want, "{rule:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let max = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Rule::parse(&max).is_ok());
        let deep = [
            format!("{}true{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1)),
            "(".repeat(100_000),
            format!("{}true", "!".repeat(100_000)),
            format!("{}1 > 0", "-".repeat(100_000)),
            format!("{}1 > 0", "1 + ".repeat(100_000)),
            format!("true{}", " || true".repeat(100_000)),
        ];
        for rule in deep {
            let err = parse_err(&rule);
            assert!(
                err.contains("nests deeper than 64 levels"),
                "{}",
                &err[err.len().saturating_sub(80)..]
            );
        }
    }

    #[test]
    fn display_from_str_and_serde_keep_the_source() {
        let source = "dbSizeFree>1GiB  &&  dbQuotaUsage > 50%";
        let rule: Rule = source.parse().unwrap_or_else(|e: RuleError| panic!("{e}"));
        assert_eq!(rule.to_string(), source);
        assert_eq!(rule.source(), source);
        let json = serde_json::to_string(&rule).unwrap_or_default();
        assert_eq!(json, format!("\"{source}\""));
        let back: Rule = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_string(), source);
        assert!(serde_json::from_str::<Rule>("\"dbSize\"").is_err());
    }

    #[test]
    fn help_names_every_variable_and_unit() {
        for v in Variable::ALL {
            assert!(RULE_HELP.contains(v.name()), "{v}");
        }
        for (unit, _) in UNITS {
            assert!(RULE_HELP.contains(unit), "{unit}");
        }
        for line in RULE_HELP.lines().filter(|l| l.starts_with("  ")) {
            assert!(Rule::parse(line.trim()).is_ok(), "{line}");
        }
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Prng(u64);

    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        const PIECES: [&str; 40] = [
            "dbSize",
            "dbSizeInUse",
            "dbSizeFree",
            "dbQuota",
            "dbQuotaUsage",
            "true",
            "false",
            "(",
            ")",
            "&&",
            "||",
            "!",
            "-",
            "+",
            "*",
            "/",
            "<",
            "<=",
            ">",
            ">=",
            "==",
            "!=",
            "=",
            "&",
            "|",
            "%",
            "1",
            "0",
            "2.5",
            "1e6",
            "e",
            ".",
            "MB",
            "KiB",
            "XB",
            " ",
            "  ",
            "é",
            "\u{1F600}",
            "9",
        ];
        let mut rng = Prng(0x9E37_79B9_7F4A_7C15);
        let all_figures = [
            DbFigures::default(),
            figures(340 * MB, 100 * MB, 2_000 * MB),
            figures(10, 20, 0),
            figures(i64::MAX, i64::MIN, -1),
        ];
        let (mut parsed, mut total) = (0, 0);
        for _ in 0..5_000 {
            let mut rule = String::new();
            for _ in 0..rng.below(24) {
                if rng.below(8) == 0 {
                    // Any character at all, now and then.
                    let c = char::from_u32((rng.next() % 0x3000) as u32).unwrap_or('?');
                    rule.push(c);
                } else {
                    rule.push_str(PIECES[rng.below(PIECES.len())]);
                }
            }
            total += 1;
            match Rule::parse(&rule) {
                Ok(r) => {
                    parsed += 1;
                    for f in &all_figures {
                        let _ = r.eval(f);
                        let _ = r.explain(f);
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        assert_eq!(total, 5_000);
        assert!(parsed > 0, "the generator should produce some valid rules");
    }

    fn gen_num(rng: &mut Prng, depth: usize) -> String {
        const LEAVES: [&str; 12] = [
            "dbSize",
            "dbSizeInUse",
            "dbSizeFree",
            "dbQuota",
            "dbQuotaUsage",
            "0",
            "1",
            "2.5",
            "100MB",
            "1GiB",
            "80%",
            "1e300",
        ];
        match if depth == 0 { 0 } else { rng.below(4) } {
            0 | 1 => LEAVES[rng.below(LEAVES.len())].to_string(),
            2 => format!("-{}", gen_num(rng, depth - 1)),
            _ => {
                let op = ["+", "-", "*", "/"][rng.below(4)];
                format!("({} {op} {})", gen_num(rng, depth - 1), gen_num(rng, depth - 1))
            }
        }
    }

    fn gen_cond(rng: &mut Prng, depth: usize) -> String {
        match if depth == 0 { rng.below(2) } else { rng.below(6) } {
            0 => ["true", "false"][rng.below(2)].to_string(),
            1 | 2 => {
                let op = ["<", "<=", ">", ">=", "==", "!="][rng.below(6)];
                format!("{} {op} {}", gen_num(rng, depth), gen_num(rng, depth))
            }
            3 => format!("!({})", gen_cond(rng, depth - 1)),
            _ => {
                let op = ["&&", "||", "==", "!="][rng.below(4)];
                format!(
                    "({}) {op} ({})",
                    gen_cond(rng, depth - 1),
                    gen_cond(rng, depth - 1)
                )
            }
        }
    }

    #[test]
    fn generated_rules_parse_and_mutations_never_panic() {
        let mut rng = Prng(0x0DDB_1A5E_5BAD_5EED);
        let all_figures = [
            DbFigures::default(),
            figures(340 * MB, 100 * MB, 2_000 * MB),
            figures(10, 20, 0),
            figures(i64::MAX, i64::MIN, -1),
        ];
        for _ in 0..2_000 {
            let rule = gen_cond(&mut rng, 4);
            let parsed = Rule::parse(&rule).unwrap_or_else(|e| panic!("{e}"));
            for f in &all_figures {
                let _ = parsed.eval(f);
                let _ = parsed.explain(f);
            }
            // Cut out a random piece: mostly errors, none of them a panic.
            let chars: Vec<char> = rule.chars().collect();
            let at = rng.below(chars.len() + 1);
            let len = rng.below(4);
            let mutated: String = chars[..at].iter().chain(chars.iter().skip(at + len)).collect();
            if let Ok(r) = Rule::parse(&mutated) {
                for f in &all_figures {
                    let _ = r.eval(f);
                    let _ = r.explain(f);
                }
            }
        }
    }
}
