//! Test fixture: a valid component of the wrong world (`wasi:cli/command`, what
//! a Rust binary becomes), which the daemon must refuse to run as a processor.

fn main() {
    println!("I am a command, not a sluice processor");
}
