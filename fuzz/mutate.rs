//! netfold's fuzz driver: a seeded byte mutator over a checked-in corpus (`fuzz/corpus/NAME/`),
//! feeding each decoder inputs that are mostly well-formed and a little wrong, and counting
//! panics. Included by the fuzz tests of `adapters` (SOAP, XML-RPC, OVSDB, eAPI) and of the
//! binary (config TOML) with `#[path]`.
//!
//! Each input starts from a corpus entry and gets 1 to 8 edits: a bit flip, a byte set to one
//! the grammars care about, random bytes inserted, a range deleted or duplicated (nesting), a
//! token of the grammars inserted (`<value>`, `</struct>`, `&amp;`, `["set",`, `-1`, `4095`…),
//! or a splice with another entry. The same seed gives the same inputs, so a crash reproduces;
//! a panicking input is written to `fuzz/crashes/NAME-N.bin`.
//!
//! Inputs per decoder: `NETFOLD_FUZZ_INPUTS` (default 2,000: the smoke run CI does); seed:
//! `NETFOLD_FUZZ_SEED` (default 1). The README gives the command of the 1M-input campaign.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOKENS: &[&[u8]] = &[
    b"<value>",
    b"</value>",
    b"<struct>",
    b"</struct>",
    b"<member><name>tag</name><value>1</value></member>",
    b"<array><data>",
    b"</data></array>",
    b"<int>",
    b"<boolean>",
    b"<![CDATA[",
    b"]]>",
    b"&amp;",
    b"&#x0;",
    b"&lt;",
    b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]>",
    b"xsi:type=\"",
    b"<returnval>",
    b"<soapenv:Fault>",
    b"[\"set\",[",
    b"[\"map\",[",
    b"[\"uuid\",\"",
    b"{\"",
    b"\":",
    b"null",
    b"-1",
    b"0",
    b"4095",
    b"99999999999999999999",
    b"1e400",
    b"\"\\ud800\"",
    b"[[hypervisor]]\n",
    b"[[topology]]\n",
    b" = ",
    b"\"\"\"",
    b"'''",
    b"http://a:b@",
    b"https://[::1",
];

const BYTES: &[u8] = b"<>/&;\"'=:{}[],.-_ \n\t\r\\0123456789\x00\x7f\xc3\xff";

/// One decoder's campaign figures.
#[derive(Debug)]
pub struct Figures {
    pub name: String,
    pub inputs: u64,
    pub took: Duration,
    pub panics: u64,
}

fn corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let seeds: Vec<Vec<u8>> = entries.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    assert!(!seeds.is_empty(), "fuzz corpus {} is empty", dir.display());
    seeds
}

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=8) {
        let at = if b.is_empty() { 0 } else { rng.gen_range(0..=b.len()) };
        match rng.gen_range(0..7) {
            0 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = rng.gen_range(0..b.len());
                b[i] = BYTES[rng.gen_range(0..BYTES.len())];
            }
            2 => {
                let n = rng.gen_range(1..=16);
                let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                b.splice(at..at, junk);
            }
            3 if at < b.len() => {
                let end = (at + rng.gen_range(1..=64)).min(b.len());
                b.drain(at..end);
            }
            4 if at < b.len() => {
                let end = (at + rng.gen_range(1..=256)).min(b.len());
                let copy = b[at..end].to_vec();
                let to = rng.gen_range(0..=b.len());
                b.splice(to..to, copy);
            }
            5 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                b.splice(at..at, t.iter().copied());
            }
            _ => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let from = rng.gen_range(0..=other.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// Runs `decode` on the corpus entries as they are, then on mutated inputs; every panic is
/// counted and its input saved. `root` is the repository root.
pub fn campaign(root: &Path, name: &str, decode: impl Fn(&[u8])) -> Figures {
    let inputs = env_u64("NETFOLD_FUZZ_INPUTS", 2_000);
    let mut rng = StdRng::seed_from_u64(env_u64("NETFOLD_FUZZ_SEED", 1));
    let seeds = corpus(&root.join("fuzz/corpus").join(name));
    let started = Instant::now();
    let mut panics = 0;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..inputs {
        let input = match seeds.get(i as usize) {
            Some(s) => s.clone(),
            None => mutate(&mut rng, &seeds),
        };
        if catch_unwind(AssertUnwindSafe(|| decode(&input))).is_err() {
            panics += 1;
            let dir = root.join("fuzz/crashes");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{name}-{i}.bin")), &input);
        }
    }
    std::panic::set_hook(hook);
    let f = Figures { name: name.to_string(), inputs, took: started.elapsed(), panics };
    eprintln!("fuzz {}: {} inputs in {:.1} s, {} panics", f.name, f.inputs, f.took.as_secs_f64(), f.panics);
    f
}
