//! Precedence climbing over the tokens into the typed tree, depth-bounded.

use super::lexer::*;
use super::syntax::*;
use super::*;

pub(super) struct Parser<'a> {
    pub(super) lexer: Lexer<'a>,
    pub(super) tok: Token,
    /// Current nesting of parentheses and unary operators.
    pub(super) depth: usize,
}

pub(super) const OPERAND: &str = "a number, a variable, true, false, `!`, `-` or `(`";

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Result<Parser<'a>, RuleError> {
        let mut lexer = Lexer {
            src,
            pos: 0,
            binary_units: false,
        };
        let tok = lexer.next_token()?;
        Ok(Parser { lexer, tok, depth: 0 })
    }

    pub(super) fn rule(&self) -> String {
        self.lexer.src.to_string()
    }

    pub(super) fn column(&self, byte: usize) -> usize {
        column(self.lexer.src, byte)
    }

    pub(super) fn text(&self, span: Span) -> &'a str {
        text(self.lexer.src, span)
    }

    pub(super) fn advance(&mut self) -> Result<(), RuleError> {
        self.tok = self.lexer.next_token()?;
        Ok(())
    }

    pub(super) fn too_deep(&self, at: usize) -> RuleError {
        RuleError::TooDeep {
            rule: self.rule(),
            column: self.column(at),
            max: MAX_DEPTH,
        }
    }

    pub(super) fn enter(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep(self.tok.span.0));
        }
        Ok(())
    }

    /// Precedence climbing: operands joined by operators binding at least `min_prec`.
    pub(super) fn expr(&mut self, min_prec: u8) -> Result<Expr, RuleError> {
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

    pub(super) fn unary(&mut self) -> Result<Expr, RuleError> {
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

    pub(super) fn primary(&mut self) -> Result<Expr, RuleError> {
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

    pub(super) fn unexpected_token(&self, expected: &'static str) -> RuleError {
        RuleError::UnexpectedToken {
            rule: self.rule(),
            expected,
            found: self.text(self.tok.span).to_string(),
            column: self.column(self.tok.span.0),
        }
    }

    pub(super) fn mismatch(
        &self,
        operator: &'static str,
        expected: &'static str,
        operand: &Expr,
    ) -> RuleError {
        RuleError::TypeMismatch {
            rule: self.rule(),
            operator,
            expected,
            operand: self.text(operand.span()).to_string(),
            column: self.column(operand.span().0),
            found: operand.kind(),
        }
    }

    pub(super) fn binary(&self, op: BinOp, op_at: usize, lhs: Expr, rhs: Expr) -> Result<Expr, RuleError> {
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
