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
        ("7 / 2 == 3", true), // integer division
        ("7 % 4 == 3", true), // % is CEL's modulo
        ("7.0 / 2.0 == 3.5", true),
        ("-2 * 3 == -6", true),
        ("-(1 + 2) == -3", true),
        ("1 - -1 == 2", true),
        ("1 + 1 > 1.5 * 1.0", true), // comparisons may mix integers and doubles
        ("true || false && false", true),
        ("(true || false) && false", false),
        ("!true || true", true),
        ("!(true || true)", false),
        ("!false && false", false),
        ("!!true", true),
        ("(1 < 2) == true", true),
        ("(1 < 2) != (2 < 1)", true),
        ("2 > 1 && 3 > 2 || 1 > 2", true),
        ("1 > 2 || 3 > 2 && 2 > 3", false),
        ("true", true),
        ("false", false),
        ("((((1 < 2))))", true),
        ("1<2&&2<3", true),
        ("1 > 2 ? false : true", true),
        ("double(7) / 2.0 == 3.5 && int(3.9) == 3", true),
        ("1e6 == 1000000", true),
        ("1\n  < 2", true),
    ];
    for (rule, want) in cases {
        assert_eq!(eval(rule, &f), Ok(want), "{rule}");
    }
}

#[test]
fn size_constants() {
    let f = DbFigures::default();
    let cases = [
        "KB == 1000",
        "MB == 1000000",
        "GB == 1000000000",
        "TB == 1000000000000",
        "KiB == 1024",
        "MiB == 1048576",
        "GiB == 1073741824",
        "TiB == 1099511627776",
        "100 * MB == 100000000",
        "2 * TiB == 2199023255552",
        "1536 * MiB == 3 * GiB / 2",
    ];
    for rule in cases {
        assert_eq!(eval(rule, &f), Ok(true), "{rule}");
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
        ("dbSizeFree == dbSize - dbSizeInUse", true),
        ("dbQuotaUsage == double(dbSize) / double(dbQuota)", true),
    ];
    for (rule, want) in cases {
        assert_eq!(eval(rule, &f), Ok(want), "{rule}");
    }
    // Figures from the network never overflow the variables.
    assert_eq!(
        eval(
            "dbSizeFree == 9223372036854775807",
            &figures(i64::MAX, i64::MIN, -1)
        ),
        Ok(true)
    );
}

#[test]
fn etcd_defrag_rules_work_unchanged() {
    let issue = "dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8";
    let defrag = "dbSize > dbQuota*80/100 || dbSize - dbSizeInUse > 200*1024*1024";
    let both = "dbSize > dbQuota*80/100 && dbSize - dbSizeInUse > 200*1024*1024";
    let free = "dbSize - dbSizeInUse > 200*1000*1000";
    let guarded = "dbQuota > 0 && dbSize > dbQuota * 8 / 10";
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
        (both, figures(1_900 * MB, 1_600 * MB, 2_000 * MB), Ok(true)),
        (both, figures(1_900 * MB, 1_800 * MB, 2_000 * MB), Ok(false)),
        (free, figures(301 * MB, 100 * MB, 0), Ok(true)),
        (free, figures(300 * MB, 100 * MB, 0), Ok(false)),
        (guarded, figures(1_700 * MB, 100 * MB, 2_000 * MB), Ok(true)),
        (guarded, figures(1_500 * MB, 100 * MB, 2_000 * MB), Ok(false)),
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
        // The etcd-defrag guard does not make a quota up: it is unknown too.
        (
            "dbQuota > 0 && dbSize > dbQuota * 8 / 10",
            unknown(Variable::DbQuota),
        ),
        (
            "dbSizeFree > 100 || (dbQuota > 0 && dbSize > dbQuota * 8 / 10)",
            unknown(Variable::DbQuota),
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(eval(rule, &f), want, "{rule}");
    }
    // A negative quota is unknown as well.
    assert_eq!(
        eval("dbQuota > 1", &figures(1, 1, -5)),
        unknown(Variable::DbQuota)
    );
}

#[test]
fn division_by_zero_and_overflow_are_errors() {
    let f = figures(0, 0, 100);
    let rule = "dbSizeFree / dbSize > 50";
    assert_eq!(
        eval(rule, &f).map_err(|e| e.to_string()),
        Err("rule `dbSizeFree / dbSize > 50`: division by zero in `dbSizeFree / dbSize` at column 1".into())
    );
    assert_eq!(
        eval("1 > 0 && dbSize % (dbSize - dbSize) == 1", &f).map_err(|e| e.to_string()),
        Err(
            "rule `1 > 0 && dbSize % (dbSize - dbSize) == 1`: division by zero in \
             `dbSize % (dbSize - dbSize)` at column 10"
                .into()
        )
    );
    assert_eq!(eval("1 / (2 - 2) > 0 || true", &f), Ok(true));
    assert!(eval("1 / (2 - 2) > 0 && true", &f).is_err());
    assert_eq!(eval("0 / 5 == 0", &f), Ok(true));
    // Doubles follow IEEE 754, as CEL says.
    assert_eq!(eval("1.0 / 0.0 > 1e308", &f), Ok(true));
    let big = figures(i64::MAX, 0, 100);
    assert_eq!(
        eval("dbSize * 2 > 0", &big).map_err(|e| e.to_string()),
        Err(
            "rule `dbSize * 2 > 0`: cannot evaluate: the integer result of `mul` does not fit in 64 bits"
                .into()
        )
    );
}

#[test]
fn explains_why() {
    let f = figures(340 * MB, 100 * MB, 2_000 * MB);
    let cases = [
        (
            "dbSize - dbSizeInUse > 100 * MB",
            "dbSize - dbSizeInUse = 240.0 MB > 100 * MB: true",
        ),
        (
            "dbSize - dbSizeInUse > 100000000 || dbQuotaUsage > 0.8",
            "(dbSize - dbSizeInUse = 240.0 MB > 100000000: true) || (dbQuotaUsage = 0.17 (17.0%) > 0.8: false) => true",
        ),
        (
            "dbSizeFree > 200 * MiB",
            "dbSizeFree = 228.9 MiB > 200 * MiB: true",
        ),
        (
            "dbSize > dbQuota * 80 / 100",
            "dbSize = 340.0 MB > dbQuota * 80 / 100 = 1.600 GB: false",
        ),
        ("dbSize >= 1", "dbSize = 340.0 MB >= 1: true"),
        ("dbSize > GB", "dbSize = 340.0 MB > GB: false"),
        (
            "dbSize > 200*1024*1024",
            "dbSize = 340.0 MB > 200*1024*1024 = 209.7 MB: true",
        ),
        ("dbSizeInUse < 900", "dbSizeInUse = 100.0 MB < 900: false"),
        (
            "!(dbQuota >= 1 * GB)",
            "!(dbQuota = 2.000 GB >= 1 * GB: true) => false",
        ),
        (
            "(dbSize - dbSizeInUse) / MB > 200",
            "(dbSize - dbSizeInUse) / MB = 240 > 200: true",
        ),
        ("true", "true"),
    ];
    for (rule, want) in cases {
        let rule = Rule::parse(rule).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rule.explain(&f), want);
    }
    let no_quota = figures(110 * MB, 100 * MB, 0);
    let rule = Rule::parse("dbSizeFree > 100 * MB || dbQuotaUsage > 0.8").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rule.explain(&no_quota),
        "(dbSizeFree = 10.00 MB > 100 * MB: false) || (dbQuotaUsage = unknown > 0.8: unknown) \
         => unknown (`dbQuotaUsage` is unknown: the member's storage quota is not known (dbQuota = 0))"
    );
}

#[test]
fn old_sugar_gets_its_cel_spelling() {
    let cases = [
        (
            "dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8",
            "rule `dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8`: `100MB` at column 24 is not CEL; \
             write `100 * MB` (the whole rule: `dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8`)\n    \
             dbSize - dbSizeInUse > 100MB || dbQuotaUsage > 0.8\n                           ^^^^^",
        ),
        (
            "dbSizeFree > 1.5GiB",
            "rule `dbSizeFree > 1.5GiB`: `1.5GiB` at column 14 is not CEL; write `1536 * MiB` \
             (the whole rule: `dbSizeFree > 1536 * MiB`)\n    dbSizeFree > 1.5GiB\n                 ^^^^^^",
        ),
        (
            "dbQuotaUsage > 80%",
            "rule `dbQuotaUsage > 80%`: `80%` at column 16 is not CEL; write `0.8` \
             (the whole rule: `dbQuotaUsage > 0.8`)\n    dbQuotaUsage > 80%\n                   ^^^",
        ),
        (
            "dbSize > 100 mb",
            "rule `dbSize > 100 mb`: `100 mb` at column 10 is not CEL; write `100 * MB` \
             (the whole rule: `dbSize > 100 * MB`)\n    dbSize > 100 mb\n             ^^^^^^",
        ),
        (
            "dbSize >= 7B && dbSize > 1e3KB",
            "rule `dbSize >= 7B && dbSize > 1e3KB`: `7B` at column 11 is not CEL; write `7` \
             (the whole rule: `dbSize >= 7 && dbSize > 1 * MB`)\n    dbSize >= 7B && dbSize > 1e3KB\n              ^^",
        ),
        (
            // A misspelt name is corrected in the whole rule.
            "dbsize > 100MB",
            "rule `dbsize > 100MB`: `100MB` at column 10 is not CEL; write `100 * MB` \
             (the whole rule: `dbSize > 100 * MB`)\n    dbsize > 100MB\n             ^^^^^",
        ),
        (
            // CEL for the unit, but the rest is still wrong: no whole rule.
            "dbSize > dbQuota * 80%",
            "rule `dbSize > dbQuota * 80%`: `80%` at column 20 is not CEL; write `0.8`\n    \
             dbSize > dbQuota * 80%\n                       ^^^",
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(parse_err(rule), want, "{rule:?}");
    }
    // `%` with an operand after it is CEL's modulo.
    assert_eq!(eval("dbSize % 2 == 0", &figures(4, 0, 0)), Ok(true));
}

#[test]
fn error_messages() {
    let cases = [
        (
            "",
            "the rule is empty; write a condition, e.g. `dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8`",
        ),
        (
            "   ",
            "the rule is empty; write a condition, e.g. `dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8`",
        ),
        (
            "dbsize > 1",
            "rule `dbsize > 1`: unknown name `dbsize` at column 1; known: dbSize, dbSizeInUse, dbSizeFree, \
             dbQuota, dbQuotaUsage and the sizes KB, MB, GB, TB, KiB, MiB, GiB, TiB (did you mean dbSize?)\n    \
             dbsize > 1\n    ^^^^^^",
        ),
        (
            "dbSize > 1 &&\n  dbQuotaUse > 0.5",
            "rule `dbSize > 1 &&\n  dbQuotaUse > 0.5`: unknown name `dbQuotaUse` at line 2, column 3; known: \
             dbSize, dbSizeInUse, dbSizeFree, dbQuota, dbQuotaUsage and the sizes KB, MB, GB, TB, KiB, MiB, \
             GiB, TiB (did you mean dbQuotaUsage?)\n      dbQuotaUse > 0.5\n      ^^^^^^^^^^",
        ),
        (
            "dbSize > 100 * mib",
            "rule `dbSize > 100 * mib`: unknown name `mib` at column 16; known: dbSize, dbSizeInUse, dbSizeFree, \
             dbQuota, dbQuotaUsage and the sizes KB, MB, GB, TB, KiB, MiB, GiB, TiB (did you mean MiB?)\n    \
             dbSize > 100 * mib\n                   ^^^",
        ),
        (
            "revision > 1",
            "rule `revision > 1`: unknown name `revision` at column 1; known: dbSize, dbSizeInUse, dbSizeFree, \
             dbQuota, dbQuotaUsage and the sizes KB, MB, GB, TB, KiB, MiB, GiB, TiB\n    revision > 1\n    ^^^^^^^^",
        ),
        (
            "dbSize > 1 and true",
            "rule `dbSize > 1 and true`: unexpected `and` at column 12; write `&&` for and\n    \
             dbSize > 1 and true\n               ^^^",
        ),
        (
            "dbSize >",
            "rule `dbSize >`: unexpected end of the rule at column 9; expected a number, a variable, true, \
             false, `!`, `-` or `(`\n    dbSize >\n            ^",
        ),
        (
            "dbSize = 1",
            "rule `dbSize = 1`: unexpected `=` at column 8; write `==` to compare\n    dbSize = 1\n           ^",
        ),
        (
            "dbSize > 1 & true",
            "rule `dbSize > 1 & true`: unexpected `&` at column 12; write `&&` for and\n    \
             dbSize > 1 & true\n               ^",
        ),
        (
            "dbSize",
            "rule `dbSize`: the rule must be a condition (true or false), e.g. \
             `dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8`, but it computes an integer",
        ),
        (
            "dbQuotaUsage * 2.0",
            "rule `dbQuotaUsage * 2.0`: the rule must be a condition (true or false), e.g. \
             `dbSize - dbSizeInUse > 100 * MB || dbQuotaUsage > 0.8`, but it computes a double",
        ),
        (
            "dbSize && 1 > 0",
            "rule `dbSize && 1 > 0`: `&&` needs a condition on each side, but `dbSize` at column 1 is an \
             integer; compare it to make a condition, e.g. `dbSizeFree > 100 * MB`\n    dbSize && 1 > 0\n    ^^^^^^",
        ),
        (
            "1 + (2 > 1) > 0",
            "rule `1 + (2 > 1) > 0`: `+` needs a number on each side, but `2 > 1` at column 6 is a \
             condition (true or false); only numbers are added, multiplied or compared with < >; join \
             conditions with && or ||\n    1 + (2 > 1) > 0\n         ^^^^^",
        ),
        (
            "dbSize > dbQuota * 0.8",
            "rule `dbSize > dbQuota * 0.8`: `dbQuota * 0.8` at column 10 mixes an integer and a double, \
             which CEL does not do in arithmetic; write `double(dbQuota) * 0.8`\n    dbSize > dbQuota * 0.8\n             \
             ^^^^^^^^^^^^^",
        ),
        (
            "dbSizeFree / dbSize > 0.5",
            "rule `dbSizeFree / dbSize > 0.5`: `dbSizeFree / dbSize` at column 1 divides integers, which \
             rounds down to a whole number in CEL, so comparing it with a double is almost never meant; \
             write `double(dbSizeFree) / double(dbSize)`\n    dbSizeFree / dbSize > 0.5\n    ^^^^^^^^^^^^^^^^^^^",
        ),
        (
            "size(dbSize) > 1",
            "rule `size(dbSize) > 1`: `size(dbSize)` at column 1 is not allowed in a rule; use numbers, the \
             variables and sizes, arithmetic, comparisons, && || !, ?:, int() and double()\n    \
             size(dbSize) > 1\n    ^^^^^^^^^^^^",
        ),
        (
            "'a' == 'a'",
            "rule `'a' == 'a'`: the literal `'a'` at column 1 is not allowed in a rule; use numbers, the \
             variables and sizes, arithmetic, comparisons, && || !, ?:, int() and double()\n    'a' == 'a'\n    ^^^",
        ),
        (
            "dbSize > 1u",
            "rule `dbSize > 1u`: the unsigned integer `1u` at column 10 is not allowed in a rule; use numbers, \
             the variables and sizes, arithmetic, comparisons, && || !, ?:, int() and double()\n    \
             dbSize > 1u\n             ^^",
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(parse_err(rule), want, "{rule:?}");
    }
}

#[test]
fn nesting_and_length_are_bounded() {
    let max = format!("{}true{}", "(".repeat(MAX_PARENS), ")".repeat(MAX_PARENS));
    assert!(Rule::parse(&max).is_ok(), "{}", parse_err(&max));
    let max = format!("{}1 > 0", "-".repeat(MAX_DEPTH - 1));
    assert!(Rule::parse(&max).is_ok(), "{}", parse_err(&max));
    for rule in [
        format!("{}true{}", "(".repeat(MAX_PARENS + 1), ")".repeat(MAX_PARENS + 1)),
        "(".repeat(2_000),
        format!("{}true{}", "[(".repeat(10), ")]".repeat(10)),
    ] {
        let err = parse_err(&rule);
        assert!(err.contains("nests more than 8 parentheses at column 9"), "{err}");
    }
    // Long runs of `!` or `-` fold (`!!x` is `x`): parsed, never a crash.
    for rule in [
        format!("{}true", "!".repeat(2_000)),
        format!("{}1 > 0", "-".repeat(2_000)),
        format!("{}true", "!-".repeat(1_000)),
        // `||` and `&&` chains are balanced by the parser.
        format!("true{}", " || true".repeat(500)),
    ] {
        if let Ok(r) = Rule::parse(&rule) {
            let _ = r.explain(&DbFigures::default());
        }
    }
    let deep = [
        format!("{}1 > 0", "1 + ".repeat(1_000)),
        format!("{}1 > 0", "dbSize * ".repeat(400)),
    ];
    for rule in deep {
        let err = parse_err(&rule);
        assert!(
            err.contains("nests deeper than 64 levels"),
            "{}",
            &err[..err.len().min(300)]
        );
    }
    let long = format!("true{}", " || true".repeat(1_000));
    assert_eq!(
        parse_err(&long),
        format!(
            "the rule is {} characters long; at most 4096 are allowed",
            long.len()
        )
    );
}

#[test]
fn display_from_str_and_serde_keep_the_source() {
    let source = "dbSizeFree>1*GiB  &&  dbQuotaUsage > 0.5";
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
fn help_names_every_variable_and_constant_and_its_examples_parse() {
    for v in Variable::ALL {
        assert!(RULE_HELP.contains(v.name()), "{v}");
    }
    for (name, _) in CONSTANTS {
        assert!(RULE_HELP.contains(name), "{name}");
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
    const PIECES: [&str; 44] = [
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
        "?",
        ":",
        "'",
        "double(",
        "[",
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
    let mut parsed = 0;
    for _ in 0..3_000 {
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
    assert!(parsed > 0, "the generator should produce some valid rules");
}

fn gen_num(rng: &mut Prng, depth: usize) -> String {
    const LEAVES: [&str; 10] = [
        "dbSize",
        "dbSizeInUse",
        "dbSizeFree",
        "dbQuota",
        "0",
        "1",
        "100 * MB",
        "GiB",
        "9223372036854775807",
        "-3",
    ];
    match if depth == 0 { 0 } else { rng.below(4) } {
        0 | 1 => LEAVES[rng.below(LEAVES.len())].to_string(),
        2 => format!("-{}", gen_num(rng, depth - 1)),
        _ => {
            let op = ["+", "-", "*", "/", "%"][rng.below(5)];
            format!("({} {op} {})", gen_num(rng, depth - 1), gen_num(rng, depth - 1))
        }
    }
}

fn gen_cond(rng: &mut Prng, depth: usize) -> String {
    match if depth == 0 { rng.below(2) } else { rng.below(7) } {
        0 => ["true", "false"][rng.below(2)].to_string(),
        1 | 2 => {
            let op = ["<", "<=", ">", ">=", "==", "!="][rng.below(6)];
            format!("{} {op} {}", gen_num(rng, depth), gen_num(rng, depth))
        }
        3 => format!("!({})", gen_cond(rng, depth - 1)),
        4 => format!("dbQuotaUsage > 0.{}", rng.below(10)),
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
    for _ in 0..1_000 {
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

#[test]
fn positions_count_characters_and_lines() {
    let err = parse_err("dbSize > 1 && é > 1");
    assert!(
        err.starts_with("rule `dbSize > 1 && é > 1`: unexpected `é` at column 15"),
        "{err}"
    );
    assert!(
        err.ends_with("\n    dbSize > 1 && é > 1\n                  ^"),
        "{err}"
    );
    let err = parse_err("dbSize > 1 &&\n  dbSize >");
    assert!(
        err.contains("unexpected end of the rule at line 2, column 11"),
        "{err}"
    );
    let err = parse_err("(dbSize > 1");
    assert!(
        err.contains("missing `)` at column 12; a `(` is never closed"),
        "{err}"
    );
    let err = parse_err("dbSize > 1)");
    assert!(
        err.contains("unexpected `)` at column 11; this `)` has no matching `(`"),
        "{err}"
    );
}
