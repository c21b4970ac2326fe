//! The `netfold` binary: CLI and wiring only.

fn main() {
    println!("netfold: under construction");
}
