//! A short run of the whole binary against five real masters: the floor, W3b's worker
//! processes, W7 and its chart, and the cost rows must all produce figures, and the floor must
//! send exactly the minimal commands (20 per pair on five masters). Slots are tiny: this checks
//! the plumbing and the command accounting, not the speed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadbench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The value of `column` in the row `workload` / `metric`.
fn cell(report: &Value, workload: &str, metric: &str, column: &str) -> Option<f64> {
    report["rows"]
        .as_array()?
        .iter()
        .find(|r| r["workload"] == workload && r["metric"] == metric)?["values"][column]
        .as_f64()
}

#[test]
fn short_run_produces_every_new_figure_and_the_chart() {
    let dir = scratch();
    let (json, png) = (dir.join("run.json"), dir.join("w7.png"));
    let out = Command::new(env!("CARGO_BIN_EXE_loadbench"))
        // W1 ends after 200 pairs (the count, not the 2 s slot, ends it), so that a few
        // commands still in flight at a slot's edge move the per-pair count by < 0.1.
        .args([
            "--secs",
            "2",
            "--rounds",
            "1",
            "--w7-secs",
            "0.2",
            "--max-ops",
            "200",
        ])
        .args(["--levels", "1,4", "--only", "w1,w3b,w7"])
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&png)
        .output()
        .expect("running loadbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadbench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();

    // W1: the floor column is there, and sends the minimal commands: SET NX PX on 5 masters,
    // then EVALSHA on 5 masters running GET + DEL each (the probe's 10 INFOs add 0.05/pair).
    for col in ["redquorum", "floor"] {
        assert!(
            cell(&report, "W1", "1 task lock+unlock p50 (us)", col).is_some(),
            "{col}"
        );
        let cpu = cell(&report, "W1", "masters' CPU us/pair", col).unwrap();
        assert!(cpu > 0.0, "{col}: masters' CPU per pair {cpu}");
    }
    let floor_cmds = cell(&report, "W1", "commands on masters/pair", "floor")
        .expect("no W1 command count for the floor (a master's INFO unreadable?)");
    assert!(
        (19.8..20.5).contains(&floor_cmds),
        "floor commands/pair {floor_cmds}"
    );

    // W3b: two worker processes of 8 tasks each reported, and the lock was taken.
    let w3b = &report["w3b"]["redquorum"];
    assert_eq!(w3b["per_process"].as_array().unwrap().len(), 2, "{w3b}");
    assert_eq!(w3b["per_task"].as_array().unwrap().len(), 16, "{w3b}");
    let acq = cell(&report, "W3b", "2 procs x 8 tasks acq/s", "redquorum").unwrap();
    assert!(acq > 0.0);
    assert!(cell(&report, "W3b", "masters' CPU us/acq", "redquorum").unwrap() > 0.0);

    // W7: every level, every uncontended subject; the chart is a 960x600 PNG.
    for level in [1, 4] {
        for col in ["redquorum", "floor"] {
            let metric = format!("{level} tasks pairs/s");
            assert!(
                cell(&report, "W7", &metric, col).unwrap() > 0.0,
                "{metric} {col}"
            );
        }
    }
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (&png[16..20], &png[20..24]);
    assert_eq!(
        (w, h),
        (&960u32.to_be_bytes()[..], &600u32.to_be_bytes()[..])
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The profile's row `metric` (a `profile:` table line), value of the `i`-th subject column.
fn profile_cell(stdout: &str, metric: &str, i: usize) -> f64 {
    let table = stdout
        .split("profile: ")
        .nth(1)
        .expect("no profile table in the output");
    let line = table
        .lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no row {metric:?} in:\n{table}"));
    let values: Vec<f64> = line[metric.len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    values[i]
}

/// `--only profile` with the opt-in `rq-batched` subject: the commands by name must match
/// what each subject sends (they are counted on the masters, so a miscounted or missing
/// subject shows), and batching off (the default) must send one EVALSHA per script call.
#[test]
fn profile_counts_commands_by_name_for_each_subject() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadbench"))
        .args([
            "--only",
            "profile",
            "--rounds",
            "1",
            "--profile-pairs",
            "300",
        ])
        .args(["--subjects", "redquorum,rq-batched,floor"])
        .output()
        .expect("running loadbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadbench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Columns in order: redquorum (unbatched, the default), rq-batched, floor.
    let near = |v: f64, want: f64| (v - want).abs() <= 0.3;
    for i in 0..3 {
        // (A pair that timed out on a loaded machine adds commands without a pair: the
        // tolerance allows a few.)
        // One SET and one GET + DEL per master and pair, whoever sends them (the release's
        // compare-and-delete).
        for name in ["SET", "GET", "DEL"] {
            let v = profile_cell(&stdout, &format!("  of which {name} (5)"), i);
            assert!(near(v, 5.0), "column {i}: {name} {v}/pair\n{stdout}");
        }
    }
    // Fencing on: the acquire reads the seal generation (HGET) and takes a token (HINCRBY) on
    // every master; the floor has neither.
    assert!(near(
        profile_cell(&stdout, "  of which HINCRBY (5)", 0),
        5.0
    ));
    assert!(near(
        profile_cell(&stdout, "  of which HINCRBY (5)", 1),
        5.0
    ));
    assert!(near(
        profile_cell(&stdout, "  of which HINCRBY (5)", 2),
        0.0
    ));
    assert!(near(profile_cell(&stdout, "  of which HGET (5)", 2), 0.0));
    for i in 0..2 {
        // The fencing counters drift apart, so some write-backs read the hash too (a run
        // saw 7.54 HGET per pair unbatched).
        let hget = profile_cell(&stdout, "  of which HGET (5)", i);
        assert!(
            (4.7..=10.0).contains(&hget),
            "column {i}: HGET {hget}/pair (one per acquire, plus write-backs)\n{stdout}"
        );
    }
    // Unbatched: an EVALSHA per acquire and per release on each of the 5 masters.
    let unbatched = profile_cell(&stdout, "  of which EVALSHA (5)", 0);
    assert!(
        unbatched >= 9.7,
        "redquorum (unbatched) sent {unbatched} EVALSHA/pair\n{stdout}"
    );
    // The floor: 5 EVALSHA (release) + 5 plain SET = 20 commands with the scripts' calls.
    assert!(near(
        profile_cell(&stdout, "commands (5, scripts' calls incl.)", 2),
        20.0
    ));
}
