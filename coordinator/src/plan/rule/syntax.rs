//! The typed syntax tree of a rule: numbers and conditions kept apart.

use super::*;

/// Byte offsets `[start, end)` into the source.
pub(super) type Span = (usize, usize);

#[derive(Debug, Clone)]
pub(super) struct NumNode {
    pub(super) num: Num,
    pub(super) span: Span,
    pub(super) dim: Dim,
    pub(super) depth: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Num {
    Lit(f64),
    Var(Variable),
    Neg(Box<NumNode>),
    /// `+ - * /`.
    Arith(BinOp, Box<NumNode>, Box<NumNode>),
}

#[derive(Debug, Clone)]
pub(super) struct CondNode {
    pub(super) cond: Cond,
    pub(super) span: Span,
    pub(super) depth: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Cond {
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
pub(super) enum Expr {
    Num(NumNode),
    Cond(CondNode),
}

impl Expr {
    pub(super) fn span(&self) -> Span {
        match self {
            Expr::Num(n) => n.span,
            Expr::Cond(c) => c.span,
        }
    }

    pub(super) fn depth(&self) -> usize {
        match self {
            Expr::Num(n) => n.depth,
            Expr::Cond(c) => c.depth,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Expr::Num(_) => Kind::Number,
            Expr::Cond(_) => Kind::Condition,
        }
    }

    pub(super) fn with_span(mut self, span: Span) -> Expr {
        match &mut self {
            Expr::Num(n) => n.span = span,
            Expr::Cond(c) => c.span = span,
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
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
    pub(super) fn symbol(self) -> &'static str {
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
    pub(super) fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div => 5,
        }
    }
}
