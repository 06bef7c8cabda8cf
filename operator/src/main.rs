//! `bft-operator`: `crd` prints the CustomResourceDefinition.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bft-operator", version, about = "The ByzantineCluster operator")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ByzantineCluster CustomResourceDefinition (YAML), as committed in crds/.
    Crd,
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Crd => {
            print!("{}", bft_operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}
