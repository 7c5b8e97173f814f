//! `hotlake-fuzz`: runs each fuzz target for a set time on inputs mutated from valid ones, and
//! prints, per target, the inputs run (execs), the share that got past decoding to the target's
//! deepest stage (deep), and the crashes (panics) found. A crashing input
//! is written to the crash directory; each one found becomes a unit test where the bug lives.
//!
//! ```text
//! hotlake-fuzz --seconds 60                     # every target for 60 s
//! hotlake-fuzz --target line-protocol --seconds 600 --seed 7
//! hotlake-fuzz --replay target/fuzz-crashes/json-query-0.bin --target json-query
//! ```
//!
//! There is no coverage feedback (no instrumented build): the runner is a mutational fuzzer
//! over each target's valid inputs, which finds panics in decoders and in apply, not deep
//! logic bugs. `scripts/fuzz` runs it in release; CI runs a short pass.

mod mutate;
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use targets::{State, Target, TARGETS};

/// Fuzz Hotlake's decoders and apply for a set time; prints execs and crashes per target.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Run only these targets (repeatable) [default: every target].
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed of the mutations (a run is repeatable for a seed, up to timing).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest input, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_len: usize,
    /// Where crashing inputs are written.
    #[arg(long, default_value = "target/fuzz-crashes")]
    crashes: PathBuf,
    /// Run one saved input through the target instead of fuzzing (shows the panic).
    #[arg(long)]
    replay: Option<PathBuf>,
}

/// What one target's run found.
struct Found {
    execs: u64,
    /// Inputs that got past decoding to the deepest stage of the target.
    deep: u64,
    crashes: u64,
}

fn fuzz(target: &Target, cli: &Cli) -> anyhow::Result<Found> {
    let seeds = (target.seeds)();
    let mut corpus: Vec<Vec<u8>> = seeds.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(cli.seed ^ name_hash(target.name));
    let mut state = State::new();
    let mut found = Found { execs: 0, deep: 0, crashes: 0 };
    let deadline = Instant::now() + Duration::from_secs(cli.seconds);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &corpus[rng.gen_range(0..corpus.len())];
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let input = mutate::mutate(&mut rng, base, other, cli.max_len);
            found.execs += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&mut state, &input)));
            found.deep += u64::from(matches!(outcome, Ok(true)));
            if outcome.is_err() {
                std::fs::create_dir_all(&cli.crashes)?;
                let file = cli.crashes.join(format!("{}-{}.bin", target.name, found.crashes));
                std::fs::write(&file, &input).with_context(|| format!("write {}", file.display()))?;
                eprintln!("{}: crash, input saved to {}", target.name, file.display());
                found.crashes += 1;
                // The state may be half-changed by the panic: start again from a fresh one.
                state = State::new();
            }
            // Mutants that got past the decoders become bases, so changes accumulate on inputs
            // that reach apply (the only feedback there is: without coverage, keeping every
            // mutant filled the corpus with inputs the first decoder refuses).
            if matches!(outcome, Ok(true)) && rng.gen_ratio(1, 8) {
                if corpus.len() < 1024 {
                    corpus.push(input);
                } else {
                    let i = rng.gen_range(seeds.len()..corpus.len());
                    corpus[i] = input;
                }
            }
        }
    }
    Ok(found)
}

/// FNV-1a of a target name, so each target draws its own mutations from one seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let chosen: Vec<&Target> = if cli.targets.is_empty() {
        TARGETS.iter().collect()
    } else {
        cli.targets
            .iter()
            .map(|name| {
                TARGETS.iter().find(|t| t.name == name).with_context(|| {
                    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                    format!("no target {name:?}; the targets are {}", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if let Some(file) = &cli.replay {
        let input = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        for t in &chosen {
            (t.run)(&mut State::new(), &input);
            println!("{}: no panic on {}", t.name, file.display());
        }
        return Ok(());
    }
    // Panics are counted and their inputs saved; their messages would drown the summary.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut crashes = 0;
    println!("{:<20} {:>12} {:>10} {:>7} {:>8}", "target", "execs", "execs/s", "deep", "crashes");
    for t in chosen {
        let started = Instant::now();
        let found = fuzz(t, &cli)?;
        let secs = started.elapsed().as_secs_f64();
        let deep = 100.0 * found.deep as f64 / found.execs.max(1) as f64;
        println!(
            "{:<20} {:>12} {:>10.0} {:>6.1}% {:>8}",
            t.name,
            found.execs,
            found.execs as f64 / secs,
            deep,
            found.crashes
        );
        crashes += found.crashes;
    }
    if crashes > 0 {
        anyhow::bail!("{crashes} crashes; inputs in {}", cli.crashes.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed that does not get past its decoders would leave the fuzzer mutating garbage.
    #[test]
    fn every_seed_reaches_its_targets_deepest_stage() {
        for t in TARGETS {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{} has no seed", t.name);
            for (i, seed) in seeds.iter().enumerate() {
                assert!((t.run)(&mut State::new(), seed), "seed {i} of {} stops at decoding", t.name);
            }
        }
    }
}
