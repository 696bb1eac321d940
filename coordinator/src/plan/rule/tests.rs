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
        Err("rule `dbSizeFree / dbSize > 50%`: division by zero in `dbSizeFree / dbSize` at column 1".into())
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
