#!/usr/bin/env python3
"""Writes the re-introduction patches (one bug each) against the current tree. Kept so that the
patches can be regenerated when the code they touch moves: each is a text replacement that
must match exactly once, or this script fails."""
import difflib
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.dirname(os.path.abspath(__file__))

BUGS = {
    "a-validity-from-quorum": (
        "validity counted from when the quorum answered instead of the round's start",
        [("src/round.rs",
          "Decision::Won => self.granted(attempt, &round, replies, t0).await,",
          "Decision::Won => self.granted(attempt, &round, replies, Instant::now()).await,")],
    ),
    "b-no-drift": (
        "the drift allowance removed",
        [("src/quorum.rs",
          "    ttl.mul_f64(factor) + DRIFT_FIXED\n",
          "    let _ = (ttl, factor, DRIFT_FIXED);\n    Duration::ZERO\n")],
    ),
    "c-no-recheck-after-fence": (
        "validity not re-checked after the fencing write-back",
        [("src/round.rs",
          "        let Ok(fencing_token) = self.fence(&round.answers, choice).await else {",
          "        let checked_at = Instant::now();\n"
          "        let Ok(fencing_token) = self.fence(&round.answers, choice).await else {"),
         ("src/round.rs",
          "let Some(valid_until) = valid_until(t0, ttl, drift, Instant::now()) else {",
          "let Some(valid_until) = valid_until(t0, ttl, drift, checked_at) else {")],
    ),
    "d-lost-from-reply": (
        "`lost` signalled from the renewal's reply rather than the deadline",
        [("src/lease.rs",
          "                    _ = tokio::time::sleep_until(deadline) => break Some(Renewal::OutOfTime),\n",
          "")],
    ),
    "e-seal-without-quorum": (
        "fencing seal decided without a quorum of sealed masters (earlier stop: seed 780)",
        [("src/fencing.rs",
          "        if self.sealed >= self.quorum {",
          "        if self.answered >= 1 {")],
    ),
    "f-takeover-by-uptime": (
        "a replacement server's quarantine counted from its uptime (earlier stop: seed 57)",
        [("src/master.rs",
          "                identity.started_at = Instant::now();\n",
          "")],
    ),
    "g-late-eval": (
        "acquire falls back to EVAL after NOSCRIPT, a second command sent late (earlier stop: seed 65)",
        [("src/master.rs",
          "                self.reload_scripts((*shared).clone()).await;\n"
          "                Err(MasterReply::NoScript)\n",
          "                let _ = &deadline;\n"
          "                Box::pin(self.eval_fallback(&mut (*shared).clone(), call))\n"
          "                    .await\n"
          "                    .map_err(|e| classify(&e).0)\n")],
    ),
    "h-not-held-on-failures": (
        "\"not held\" when failures, not refusals, rule out a quorum (earlier stop: seed 3)",
        [("src/guard.rs",
          "        if replies.refused() > n - self.redlock.quorum() {\n"
          "            Error::NotHeld {",
          "        if replies.failures() <= n - self.redlock.quorum() {\n"
          "            Error::NotHeld {")],
    ),
    "i-fill-overwrites": (
        "a cache fill written with a plain SET, also after the fill lock was lost (earlier stop: seed 8)",
        [("src/cache/compute.rs",
          "                if lost {\n",
          "                let _ = lost;\n"
          "                if false {\n"),
         ("src/cache/compute.rs",
          "                } else if !self.fill_if_absent(key, &value, ttl).await && guard.is_some() {\n",
          "                } else if !matches!(self.set(key, &value, ttl).await, Ok(crate::cache::WriteOutcome::Written))\n                    && guard.is_some()\n                {\n")],
    ),
    "j-cache-write-resent": (
        "cache writes re-sent on a new connection after a broken one (earlier stop: seed 459)",
        [("src/cache/mod.rs",
          "        self.send(node, pipe, true).await\n",
          "        self.send(node, pipe, false).await\n")],
    ),
}


def main():
    for name, (title, edits) in BUGS.items():
        files = {}
        for path, old, new in edits:
            text = files.get(path)
            if text is None:
                with open(os.path.join(ROOT, path)) as f:
                    text = f.read()
                files[path] = text
            if text.count(old) != 1:
                sys.exit(f"{name}: {path}: expected one match of {old!r}, found {text.count(old)}")
            files[path] = text.replace(old, new)
        out = [f"Re-introduces: {title}\n", "\n"]
        for path, new_text in files.items():
            with open(os.path.join(ROOT, path)) as f:
                old_text = f.read()
            out.extend(difflib.unified_diff(
                old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                f"a/{path}", f"b/{path}"))
        with open(os.path.join(OUT, f"{name}.patch"), "w") as f:
            f.writelines(out)
        print(f"{name}.patch: {title}")


if __name__ == "__main__":
    main()
