//! What `etcdops backup drill` prints for people: the verdict, then every
//! comparison with both figures (JSON is [`super::DrillReport`] as is).

use super::DrillReport;
use crate::output::table::{new_table, render};

/// The drill's table.
pub fn render_drill(r: &DrillReport) -> String {
    let mut out = format!(
        "drill {} of {} ({}): {}\n",
        r.operation,
        r.backup,
        r.target,
        if r.passed { "PASSED" } else { "FAILED" }
    );
    let mut table = new_table(&["CHECK", "EXPECTED", "FOUND", "OK"]);
    for c in &r.checks {
        table.add_row(vec![
            c.name.clone(),
            c.expected.clone(),
            c.actual.clone(),
            if c.ok { "ok".into() } else { "MISMATCH".into() },
        ]);
    }
    out.push_str(&render(&table));
    if let Some(restored) = &r.restored {
        out.push_str(&format!(
            "restored etcd: revision {}, {} keys, hash_kv {}, compact revision {}{}\n",
            restored.revision,
            restored.keys,
            restored.hash_kv,
            restored.compact_revision,
            r.restored_with
                .as_deref()
                .map(|t| format!(" (restored with {t})"))
                .unwrap_or_default()
        ));
    } else {
        out.push_str("not restored: the file does not match its sidecar\n");
    }
    for dir in &r.cleaned_leftovers {
        out.push_str(&format!("removed the leftovers of a dead drill: {dir}\n"));
    }
    out.push_str(&format!(
        "took {} ms; everything the drill created was removed\n",
        r.took_ms
    ));
    out
}
