//! Defrag rules (`etcdops defrag --rule EXPR`): a CEL expression over a member's database
//! figures (`dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8`) that chooses which
//! members need a defrag. The `cel` crate parses and evaluates; this module declares the
//! variables and size constants, checks a parsed rule once before any plan is shown
//! ([`check`]: only numbers, the names below, arithmetic, comparisons, `&& || !`, `?:`,
//! `int()` and `double()`, with CEL's types, and the result must be a bool), turns the
//! old unit sugar into its CEL spelling in errors ([`legacy`]), and shows in a plan why a
//! member was chosen ([`explain`]).
//!
//! The variables are those of etcd-defrag's `--defrag-rule` (`dbSize`, `dbSizeInUse`,
//! `dbQuota`, integers), plus `dbSizeFree` (integer) and `dbQuotaUsage` (double), so its
//! rules work unchanged (`dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024`).
//!
//! Decisions:
//! - Only CEL is accepted. `100MB`, `1.5GiB` and `80%` (this tool's older sugar) are errors
//!   that give the CEL spelling (`100 * MB`, `1536 * MiB`, `0.8`); `%` is CEL's modulo.
//! - A quota of 0 (or less) means "unknown": `dbQuota` and `dbQuotaUsage` are then left
//!   unbound, so a rule that needs them evaluates to [`RuleError::Unknown`], unless the rest
//!   of the rule decides anyway (CEL's `&&`/`||` absorb an error: `unknown || true` is true,
//!   `unknown && false` is false, whatever the order). A guard such as `dbQuota > 0 && …`
//!   is therefore itself unknown for such a member, as before.
//! - Integer division by zero and integer overflow are errors; double division by zero
//!   gives an infinity, as CEL specifies. Comparing an integer division with a double
//!   (`dbSizeFree / dbSize > 0.5`, always 0 or 1 in CEL) is refused with the `double()`
//!   spelling.
//! - A rule is at most [`MAX_LEN`] characters, nests at most [`MAX_PARENS`] parentheses
//!   (checked before the CEL parser runs, on a thread of its own with a large stack) and
//!   [`MAX_DEPTH`] levels of operators, so no input can overflow the stack.
//! - Changed from the hand-written language this replaced: numbers are CEL integers or
//!   doubles (they were all floating point), so `/` between integers rounds down and
//!   arithmetic mixing the two needs `double()`; parentheses nest 8 deep (were 64).

mod check;
mod explain;
mod legacy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use cel::common::ast::Expr;
use cel::{Context, ExecutionError, IdedExpr, Value};

/// The deepest a rule may nest (parentheses, unary operators, operator chains).
pub const MAX_DEPTH: usize = 64;

/// The most parentheses (or brackets) a rule may nest: the ANTLR runtime under the CEL
/// parser overflowed the stack on about a dozen around `true` (whatever the stack size,
/// in a debug build); 8 is far more than a defrag rule needs.
pub const MAX_PARENS: usize = 8;

/// The longest rule, in characters.
pub const MAX_LEN: usize = 4096;

/// The stack of the thread that runs the CEL parser.
const PARSER_STACK: usize = 16 << 20;

/// What `etcdops defrag --help` says about `--rule`.
pub const RULE_HELP: &str = "\
A rule is a CEL expression (the language of etcd-defrag's --defrag-rule and of Kubernetes) evaluated \
for each member; the members for which it is true are defragmented. Variables, from each member's \
status: dbSize (size of the database file, bytes), dbSizeInUse (bytes in use), dbSizeFree (dbSize - \
dbSizeInUse), dbQuota (the storage quota, bytes) — integers — and dbQuotaUsage (dbSize / dbQuota, a \
double; 0.8 = 80%). Size constants (integers): KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB \
(powers of 1024), so 100 * MB. Operators: ||, &&, !, comparisons (< <= > >= == !=), + - * / % (integer \
division rounds down; integers and doubles do not mix in arithmetic: double(dbQuota) * 0.8), c ? a : b, \
int() and double(); parentheses group. For a member whose quota is unknown a rule that needs dbQuota or \
dbQuotaUsage is undecided (an error naming the member) unless the rest of the rule decides it; integer \
division by zero is an error. etcd-defrag rules work unchanged. Examples:
  dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8
  dbSizeFree > 1 * GiB && double(dbSizeFree) / double(dbSize) > 0.5
  dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024";

/// The example shown when a rule is empty or not a condition.
const EXAMPLE: &str = "dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8";

/// The size constants a rule can name, in bytes.
pub const CONSTANTS: [(&str, i64); 8] = [
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
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

    /// Its CEL type: `dbQuotaUsage` is a double, the others integers.
    pub fn ty(self) -> Ty {
        match self {
            Variable::DbQuotaUsage => Ty::Double,
            _ => Ty::Int,
        }
    }

    /// Its value for a member; `None` for the quota ones when the quota is not known.
    pub fn value(self, figures: &DbFigures) -> Option<Value> {
        let quota = (figures.db_quota > 0).then_some(figures.db_quota);
        Some(match self {
            Variable::DbSize => Value::Int(figures.db_size),
            Variable::DbSizeInUse => Value::Int(figures.db_size_in_use),
            Variable::DbSizeFree => Value::Int(figures.db_size.saturating_sub(figures.db_size_in_use)),
            Variable::DbQuota => Value::Int(quota?),
            Variable::DbQuotaUsage => Value::Float(figures.db_size as f64 / quota? as f64),
        })
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The CEL type of a (checked) part of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Double,
    Bool,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Int => "an integer",
            Ty::Double => "a double",
            Ty::Bool => "a condition (true or false)",
        })
    }
}

/// Where in a rule: 1-based line and column (in characters) and how many characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub line: usize,
    pub column: usize,
    pub width: usize,
}

impl Place {
    /// The place of the characters `start..end` (char indexes) of `source`.
    fn of(source: &str, start: usize, end: usize) -> Place {
        let (mut line, mut column) = (1, 1);
        for c in source.chars().take(start) {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        Place {
            line,
            column,
            width: end.saturating_sub(start).max(1),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 1 {
            write!(f, "line {}, column {}", self.line, self.column)
        } else {
            write!(f, "column {}", self.column)
        }
    }
}

/// The line of `rule` at `at` with carets under the place, on two indented lines.
fn caret(rule: &str, at: &Place) -> String {
    let Some(line) = rule.lines().nth(at.line - 1) else {
        return String::new();
    };
    let line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let visible = line.chars().count().saturating_sub(at.column - 1).max(1);
    format!(
        "\n    {line}\n    {}{}",
        " ".repeat(at.column - 1),
        "^".repeat(at.width.min(visible))
    )
}

/// Why a rule did not parse, or could not be decided for a member. Parse errors quote the
/// rule, give the line and column (in characters) at fault and show it with carets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the rule is empty; write a condition, e.g. `{EXAMPLE}`")]
    Empty,
    #[error("the rule is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("rule `{rule}`: {message} at {at}{hint}{}", caret(.rule, .at))]
    Syntax {
        rule: String,
        message: String,
        /// Empty, or `; ` and what to write instead.
        hint: String,
        at: Place,
    },
    #[error(
        "rule `{rule}`: `{found}` at {at} is not CEL; write `{instead}`{}{}",
        .whole.as_ref().map(|w| format!(" (the whole rule: `{w}`)")).unwrap_or_default(),
        caret(.rule, .at)
    )]
    OldSyntax {
        rule: String,
        found: String,
        instead: String,
        /// The whole rule in CEL, when that spelling is a valid rule.
        whole: Option<String>,
        at: Place,
    },
    #[error(
        "rule `{rule}`: unknown name `{name}` at {at}; known: dbSize, dbSizeInUse, dbSizeFree, \
         dbQuota, dbQuotaUsage and the sizes KB, MB, GB, TB, KiB, MiB, GiB, TiB{}{}",
        .suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(),
        caret(.rule, .at)
    )]
    UnknownVariable {
        rule: String,
        name: String,
        suggestion: Option<&'static str>,
        at: Place,
    },
    #[error(
        "rule `{rule}`: {what} at {at} is not allowed in a rule; use numbers, the variables and \
         sizes, arithmetic, comparisons, && || !, ?:, int() and double(){}",
        caret(.rule, .at)
    )]
    Unsupported { rule: String, what: String, at: Place },
    #[error(
        "rule `{rule}`: `{operator}` needs {expected}, but `{operand}` at {at} is {found}; {hint}{}",
        caret(.rule, .at)
    )]
    TypeMismatch {
        rule: String,
        operator: &'static str,
        expected: &'static str,
        operand: String,
        found: Ty,
        hint: &'static str,
        at: Place,
    },
    #[error(
        "rule `{rule}`: `{expr}` at {at} mixes an integer and a double, which CEL does not do \
         in arithmetic; write `{instead}`{}",
        caret(.rule, .at)
    )]
    MixedNumbers {
        rule: String,
        expr: String,
        instead: String,
        at: Place,
    },
    #[error(
        "rule `{rule}`: `{expr}` at {at} divides integers, which rounds down to a whole number \
         in CEL, so comparing it with a double is almost never meant; write `{instead}`{}",
        caret(.rule, .at)
    )]
    IntegerDivision {
        rule: String,
        expr: String,
        instead: String,
        at: Place,
    },
    #[error(
        "rule `{rule}`: the rule must be a condition (true or false), e.g. `{EXAMPLE}`, but it \
         computes {found}"
    )]
    NotACondition { rule: String, found: Ty },
    #[error("rule `{rule}`: nests deeper than {max} levels at {at}{}", caret(.rule, .at))]
    TooDeep { rule: String, max: usize, at: Place },
    #[error(
        "rule `{rule}`: nests more than {max} parentheses at {at}; write it with fewer{}",
        caret(.rule, .at)
    )]
    TooManyParens { rule: String, max: usize, at: Place },
    /// Evaluation: the rule needs a variable this member's figures do not give.
    #[error("`{variable}` is unknown: the member's storage quota is not known (dbQuota = 0)")]
    Unknown { variable: Variable },
    /// Evaluation: an integer divisor was zero.
    #[error("rule `{rule}`: division by zero in `{expr}` at {at}")]
    DivisionByZero { rule: String, expr: String, at: Place },
    /// Evaluation: anything else CEL refused (an integer overflow).
    #[error("rule `{rule}`: cannot evaluate: {message}")]
    Eval { rule: String, message: String },
}

/// Each node's characters in the source (`start..end`, char indexes), parentheses around
/// a part included when they belong to it.
type Spans = HashMap<u64, (usize, usize)>;

/// A parsed and checked defrag rule. Keeps its source text, which `Display` prints.
#[derive(Debug, Clone)]
pub struct Rule {
    source: String,
    expr: IdedExpr,
    spans: Spans,
    /// Whether the rule names binary sizes (`MiB`): `explain` then prints sizes that way.
    binary_units: bool,
}

impl Rule {
    /// Parses and checks a rule; the error quotes it and points at the place at fault.
    pub fn parse(source: &str) -> Result<Rule, RuleError> {
        let result = Rule::parse_cel(source);
        if let Err(RuleError::Syntax { .. }) = &result
            && let Some(old) = legacy::old_syntax(source)
        {
            return Err(old);
        }
        result
    }

    /// [`Rule::parse`] without looking for the old unit sugar.
    fn parse_cel(source: &str) -> Result<Rule, RuleError> {
        if source.trim().is_empty() {
            return Err(RuleError::Empty);
        }
        let len = source.chars().count();
        if len > MAX_LEN {
            return Err(RuleError::TooLong { len, max: MAX_LEN });
        }
        check::parentheses(source)?;
        let owned = source.to_string();
        let (expr, info) = std::thread::Builder::new()
            .name("rule-parser".into())
            .stack_size(PARSER_STACK)
            .spawn(move || {
                cel::parser::Parser::new()
                    .max_recursion_depth(MAX_DEPTH as u16)
                    .parse_with_source_info(&owned)
                    .map_err(|errors| check::syntax_error(&owned, &errors))
            })
            .map_err(|e| format!("cannot start the rule parser: {e}"))
            .and_then(|parser| {
                parser
                    .join()
                    .map_err(|_| "the CEL parser failed on this rule".to_string())
            })
            .map_err(|message| RuleError::Syntax {
                rule: source.to_string(),
                message,
                hint: String::new(),
                at: Place::of(source, 0, source.chars().count()),
            })??;
        let spans = check::spans(source, &expr, &info);
        let checker = check::Checker {
            source,
            spans: &spans,
        };
        match checker.check(&expr, 0)? {
            Ty::Bool => {}
            found => {
                return Err(RuleError::NotACondition {
                    rule: source.to_string(),
                    found,
                });
            }
        }
        let binary_units = check::names(&expr)
            .iter()
            .any(|n| n.ends_with("iB") && CONSTANTS.iter().any(|(c, _)| c == n));
        Ok(Rule {
            source: source.to_string(),
            expr,
            spans,
            binary_units,
        })
    }

    /// The rule as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the member with these figures needs a defrag. Errors are evaluation errors
    /// only: [`RuleError::Unknown`] (the rule needs the quota and this member's is not
    /// known, and the rest of the rule does not decide), [`RuleError::DivisionByZero`] or
    /// [`RuleError::Eval`] (an integer overflow).
    pub fn eval(&self, figures: &DbFigures) -> Result<bool, RuleError> {
        let context = context(figures);
        match self.value(&self.expr, &context)? {
            Value::Bool(b) => Ok(b),
            // The checker proved the rule is a condition.
            other => Err(RuleError::Eval {
                rule: self.source.clone(),
                message: format!("the rule gave {other:?}, not true or false"),
            }),
        }
    }

    /// One part of the rule, evaluated; CEL's errors become [`RuleError`]s.
    fn value(&self, expr: &IdedExpr, context: &Context) -> Result<Value, RuleError> {
        Value::resolve(expr, context).map_err(|e| match e {
            ExecutionError::UndeclaredReference(name) => match Variable::from_name(&name) {
                Some(variable) => RuleError::Unknown { variable },
                None => self.eval_error(&ExecutionError::UndeclaredReference(name)),
            },
            ExecutionError::DivisionByZero(_) | ExecutionError::RemainderByZero(_) => {
                match self.zero_divisor(expr, context) {
                    Some(node) => {
                        let (start, end) = self.span(node);
                        RuleError::DivisionByZero {
                            rule: self.source.clone(),
                            expr: self.text(node),
                            at: Place::of(&self.source, start, end),
                        }
                    }
                    None => self.eval_error(&e),
                }
            }
            e => self.eval_error(&e),
        })
    }

    fn eval_error(&self, e: &ExecutionError) -> RuleError {
        let message = match e {
            ExecutionError::Overflow(op, ..) => {
                format!("the integer result of `{op}` does not fit in 64 bits")
            }
            e => e.to_string(),
        };
        RuleError::Eval {
            rule: self.source.clone(),
            message,
        }
    }

    /// The first `/` or `%` (evaluation order) whose integer divisor is 0.
    fn zero_divisor<'e>(&self, expr: &'e IdedExpr, context: &Context) -> Option<&'e IdedExpr> {
        let Expr::Call(call) = &expr.expr else {
            return None;
        };
        if let Some(found) = call.args.iter().find_map(|a| self.zero_divisor(a, context)) {
            return Some(found);
        }
        let division = matches!(call.func_name.as_str(), "_/_" | "_%_");
        let zero = call
            .args
            .get(1)
            .is_some_and(|d| matches!(Value::resolve(d, context), Ok(Value::Int(0))));
        (division && zero).then_some(expr)
    }

    /// The characters of a part of the rule.
    fn span(&self, expr: &IdedExpr) -> (usize, usize) {
        self.spans.get(&expr.id).copied().unwrap_or((0, 0))
    }

    /// A part of the rule as written.
    fn text(&self, expr: &IdedExpr) -> String {
        let (start, end) = self.span(expr);
        self.source.chars().skip(start).take(end - start).collect()
    }
}

/// The variables of one member (the quota ones only when it is known) and the sizes.
fn context(figures: &DbFigures) -> Context<'static, 'static> {
    let mut context = Context::default();
    for v in Variable::ALL {
        if let Some(value) = v.value(figures) {
            context.add_variable_from_value(v.name(), value);
        }
    }
    for (name, bytes) in CONSTANTS {
        context.add_variable_from_value(name, Value::Int(bytes));
    }
    context
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
