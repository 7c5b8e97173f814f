//! The tidy rules over the repository, and each rule shown to catch a planted violation.

use std::path::Path;

use hotlake_tidy::*;

/// The repository keeps every tidy rule.
#[test]
fn the_repository_is_tidy() {
    // The checkout being tested, as cargo says when it runs the test: a test binary built for
    // another checkout (a shared target directory) must not check that one instead.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let root = Path::new(&manifest_dir).join("../..");
    let tree = Tree::load(&root).expect("read the repository");
    let violations = check_all(&tree);
    let listed: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(violations.is_empty(), "{} tidy violations:\n{}", violations.len(), listed.join("\n"));
}

/// A crate other than storage-rocks that depends on rocksdb, or code that names it, is caught.
#[test]
fn rocksdb_outside_its_crate_is_caught() {
    let tree = Tree::of(&[
        ("crates/engine/Cargo.toml", "[dependencies]\nrocksdb = { workspace = true }\n"),
        ("node/src/x.rs", "use rocksdb::DB;\n"),
        ("crates/storage-rocks/Cargo.toml", "[dependencies]\nrocksdb = { workspace = true }\n"),
        ("Cargo.toml", "[workspace.dependencies]\nrocksdb = \"0.25\"\n"),
    ]);
    let found = rocksdb_only_in_its_crate(&tree);
    let files: Vec<&str> = found.iter().map(|v| v.file.as_str()).collect();
    assert_eq!(files, ["crates/engine/Cargo.toml", "node/src/x.rs"], "{found:?}");
}

/// A crate below the node that depends on or imports the node assembly is caught.
#[test]
fn importing_the_node_from_below_is_caught() {
    let tree = Tree::of(&[
        ("crates/engine/Cargo.toml", "[dev-dependencies]\nhotlake-node = { workspace = true }\n"),
        ("client/src/lib.rs", "use hotlake_node::node::Node;\n"),
        ("sim-tests/Cargo.toml", "[dependencies]\nhotlake-node = { workspace = true }\n"),
    ]);
    let found = nothing_below_imports_the_node(&tree);
    let files: Vec<&str> = found.iter().map(|v| v.file.as_str()).collect();
    assert_eq!(files, ["crates/engine/Cargo.toml", "client/src/lib.rs"], "{found:?}");
}

fn function_of(lines: usize, reason: &str) -> String {
    format!("{reason}\npub(crate) async fn body() {{\n{}}}\n", "    step();\n".repeat(lines - 2))
}

/// A function over the limit is caught unless a comment above it says why.
#[test]
fn long_functions_without_a_reason_are_caught() {
    let long = function_of(FUNCTION_LINES_MAX + 1, "");
    let explained = function_of(FUNCTION_LINES_MAX + 1, "// tidy: long (one match over every command kind)");
    let short = function_of(FUNCTION_LINES_MAX, "");
    let tree = Tree::of(&[("a.rs", &long), ("b.rs", &explained), ("c.rs", &short)]);
    let found = long_functions_say_why(&tree);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].file.as_str(), found[0].line), ("a.rs", 2));
}

/// A fixed sleep in a real-time test is caught; polling with a deadline and a stated pause
/// are not; the simulator's tests (simulated time) are out of scope.
#[test]
fn fixed_sleeps_in_tests_are_caught() {
    let fixed = "fn t() {\n    start();\n    std::thread::sleep(Duration::from_secs(3));\n}\n";
    let polling = "fn t() {\n    let deadline = now() + T;\n    while !ready() {\n        assert!(now() < deadline);\n        std::thread::sleep(P);\n    }\n}\n";
    let stated = "fn t() {\n    // tidy: sleep (back off after a refused write)\n    std::thread::sleep(P);\n}\n";
    let tree = Tree::of(&[
        ("node/tests/it/a.rs", fixed),
        ("node/tests/it/b.rs", polling),
        ("node/tests/it/c.rs", stated),
        ("sim-tests/tests/t10.rs", fixed),
    ]);
    let found = no_fixed_sleeps_in_tests(&tree);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].file.as_str(), found[0].line), ("node/tests/it/a.rs", 3));
}

/// A `pub` item of a library crate that nothing names is caught; one with a caller is not.
#[test]
fn pub_items_without_callers_are_caught() {
    let tree = Tree::of(&[
        ("crates/engine/src/a.rs", "pub fn used() {}\npub fn unused_helper() {}\npub const LIMIT_MAX: u32 = 1;\n"),
        ("node/src/b.rs", "fn f() { used(); let _ = LIMIT_MAX; }\n"),
    ]);
    let found = pub_items_have_callers(&tree);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].what.contains("unused_helper"), "{found:?}");
}
