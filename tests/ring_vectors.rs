//! Placement must agree key for key with the real libmemcached (weighted ketama, MD5).
//!
//! The vectors in `tests/data/ketama/*.tsv` come from `tools/ketama-vectors/generate.sh`,
//! which asks Debian's libmemcached `memcached_generate_hash()` for every key.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use redquorum::{HashRing, RingNode};

struct VectorSet {
    nodes: Vec<RingNode>,
    /// (key bytes, expected "host:port")
    cases: Vec<(Vec<u8>, String)>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ketama")
}

/// Undoes the generator's escaping: `\xNN` is a byte, everything else is literal.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            assert_eq!(b.get(i + 1), Some(&b'x'), "bad escape in {s:?}");
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn load(path: &Path) -> VectorSet {
    let text = fs::read_to_string(path).unwrap();
    let mut set = VectorSet {
        nodes: Vec::new(),
        cases: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["server", host, port, weight] => set.nodes.push(
                RingNode::new(host, port.parse().unwrap()).with_weight(weight.parse().unwrap()),
            ),
            [key, owner] => set.cases.push((unescape(key), owner.to_owned())),
            _ => panic!("{}:{}: malformed line {line:?}", path.display(), n + 1),
        }
    }
    set
}

fn load_all() -> BTreeMap<String, VectorSet> {
    let mut sets = BTreeMap::new();
    for entry in fs::read_dir(data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tsv") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            sets.insert(name, load(&path));
        }
    }
    sets
}

#[test]
fn placement_matches_libmemcached_key_for_key() {
    let sets = load_all();
    let expected_sets = [
        "five-mixed-ports",
        "four-weighted",
        "hundred",
        "one",
        "six-odd-weights",
        "ten",
        "three-default-port",
        "tie-ab",
        "tie-ba",
        "twenty-five",
    ];
    assert_eq!(
        sets.keys().map(String::as_str).collect::<Vec<_>>(),
        expected_sets
    );

    for (name, set) in &sets {
        assert!(!set.nodes.is_empty(), "{name}: no servers");
        assert!(
            set.cases.len() >= 1_900,
            "{name}: only {} keys",
            set.cases.len()
        );
        let ring = HashRing::from_nodes(set.nodes.clone());
        let mut mismatches = Vec::new();
        for (key, expected) in &set.cases {
            let got = ring.node_for(key).expect("ring has live nodes").to_string();
            if &got != expected {
                mismatches.push((String::from_utf8_lossy(key).into_owned(), expected, got));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{name}: {} of {} keys placed differently from libmemcached, first: {:?}",
            mismatches.len(),
            set.cases.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }
}

#[test]
fn vectors_exercise_the_tie_order() {
    // Same servers, list order swapped: libmemcached gives the shared point to whichever
    // is listed first, so the tie-probe keys must change owner between the two files.
    let sets = load_all();
    let (ab, ba) = (&sets["tie-ab"], &sets["tie-ba"]);
    assert_eq!(ab.nodes[0], ba.nodes[1]);
    assert_eq!(ab.nodes[1], ba.nodes[0]);
    let flipped = ab
        .cases
        .iter()
        .zip(&ba.cases)
        .filter(|((ka, oa), (kb, ob))| {
            assert_eq!(ka, kb);
            oa != ob
        })
        .count();
    assert!(flipped >= 16, "only {flipped} keys depend on the tie order");
}

#[test]
fn vectors_cover_awkward_keys() {
    let set = &load_all()["ten"];
    let keys: Vec<&[u8]> = set.cases.iter().map(|(k, _)| k.as_slice()).collect();
    assert!(keys.contains(&&b""[..]), "empty key");
    assert!(keys.contains(&&b"\0"[..]), "NUL byte");
    assert!(
        keys.iter().any(|k| std::str::from_utf8(k).is_err()),
        "non-UTF-8 key"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("ключ".as_bytes())),
        "UTF-8 key"
    );
    assert!(keys.iter().any(|k| k.len() > 1_000), "long key");
}
