//! Runs seeded simulations of a cluster and reports what they found.

use std::process::ExitCode;

use bft_core::messages::ReplicaId;
use bft_sim::{self as sim, Behaviour, Outcome, Scenario, SimConfig};
use clap::Parser;

/// Run K seeded scenarios of N replicas, B of them Byzantine, over a lossy, partitioned network.
#[derive(Parser)]
#[command(name = "bft-sim", version)]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed; seeds run from here upwards.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Replicas in the cluster (at least 4).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Byzantine replicas (at most F = floor((N-1)/3)).
    #[arg(long, default_value_t = 1)]
    byzantine: usize,
    /// Clients, each submitting transfers one after another.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Transfers each client submits.
    #[arg(long, default_value_t = 6)]
    transfers: usize,
    /// Make member ID Byzantine with a behaviour (equivocate, corrupt-signatures, double-spend, censor,
    /// replay, silent, backup-proposal, depose, forged-relay, accusation-flood, corrupt-chunks, equivocating-new-primary,
    /// fabricated-certificate, byzzfuzz, twins), as ID=BEHAVIOUR; repeatable. Counts towards --byzantine. Twins runs the member
    /// as two honest instances under its key, each meeting a different part of the cluster (random members draw
    /// every behaviour but byzzfuzz and twins).
    #[arg(long = "member", value_parser = parse_member)]
    members: Vec<(ReplicaId, Behaviour)>,
    /// A calm network: no loss, duplication, partitions or crashes (Byzantine members still misbehave).
    #[arg(long)]
    calm: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Print every seed's outcome, not only failures.
    #[arg(long)]
    verbose: bool,
    /// Print every replica event of every run to standard error (to replay a failing seed).
    #[arg(long)]
    trace: bool,
    /// In the middle of the load, replace one member (a Byzantine one if any) by a new one through the protocol.
    #[arg(long)]
    reconfigure: bool,
    /// Run an adversarial schedule on a calm network instead of random faults: competing-certificates (two
    /// batches prepared for one sequence in two views, then a view change over both); depose (a Byzantine backup
    /// claims to suspect every primary and sends VIEW-CHANGEs for near and far views, while clients give each
    /// transfer to one replica: no honest replica may leave view 0); backup-proposal (a Byzantine backup signs
    /// proposals of its own: the cluster stays live and the backup is proven); equivocating-primary (the primary
    /// sends conflicting proposals to two halves of the backups, its votes backing each side's: it is proven, and
    /// the cluster stays live); forged-relay (a Byzantine backup passes on made-up committed batches in the
    /// primary's name: nobody is blamed); and accusation-flood (a Byzantine backup accuses every member over and
    /// over: nobody honest is quarantined).
    /// faulty-chunk-servers (a lagging member catches up by state transfer while its F lowest-ranked peers crash
    /// or, --byzantine of them, serve corrupted chunks; it prints catch_up_ms with --json); lone-suspicion (a
    /// backup cut off from the primary leaves view 0 with F Byzantine members' suspicions while the rest stay,
    /// and their VIEW-CHANGEs for far views must not count as support: once healed it votes in view 0 again, and
    /// nobody installs another view; it prints votes_again_ms);
    /// equivocating-new-primary (the primary of view 0 is cut off and the Byzantine primary of view 1 sends
    /// different valid NEW-VIEWs to different replicas and one on fewer than a quorum of VIEW-CHANGEs to others: it is
    /// proven, and the cluster commits again by view 2; it prints new_view_proof_ms); fabricated-certificate (a
    /// Byzantine backup signs VIEW-CHANGEs carrying a prepared certificate it made up while the primary's proposals
    /// are dropped until view 1 installs: it is proven, nobody else is, and the cluster commits again in view 1; it
    /// prints certificate_proof_ms); byzzfuzz (the Byzantine primary of view 0 runs ByzzFuzz's small-scope
    /// mutations by round: in some rounds its proposals, votes, checkpoints and VIEW-CHANGEs reach some replicas
    /// with a sequence number or view one off, another round's digest, or the certificates left out, validly signed:
    /// no violation, nobody honest blamed, every transfer completes); twins (one member, by the seed, runs as two honest instances under its one key,
    /// each meeting a different group of the others, the split drawn from the seed and changing each quarter of the
    /// schedule, one quarter unsplit, so they sign conflicting proposals, votes and VIEW-CHANGEs: no violation, nobody
    /// honest accused or proven, and every transfer commits once the schedule ends; it prints twin_conflicts and the
    /// seeds that proved the member).
    /// In depose, backup-proposal, forged-relay and accusation-flood no honest replica may leave view 0.
    #[arg(long)]
    scenario: Option<Scenario>,
    /// Accounts in the genesis besides the clients', to make the state larger (1,000,000: some 40 chunks of 1 MiB).
    #[arg(long, default_value_t = 0)]
    accounts: usize,
}

#[derive(serde::Serialize)]
struct Summary {
    seeds: u64,
    replicas: usize,
    byzantine: usize,
    committed: u64,
    applied: u64,
    rejected: u64,
    view_changes: u64,
    violations: u64,
    liveness_failures: u64,
    /// Messages and requests honest replicas refused, by reason, over all seeds.
    refused: std::collections::BTreeMap<&'static str, u64>,
    /// Pieces of evidence honest replicas produced, by the member they prove misbehaved (all verified; the
    /// simulator fails a seed whose evidence accuses an honest member).
    proven: std::collections::BTreeMap<ReplicaId, u64>,
    /// Seeds in which each member was quarantined by consensus.
    quarantined: std::collections::BTreeMap<ReplicaId, u64>,
    /// Seeds whose reconfiguration took effect.
    reconfigured: u64,
    /// The pinned Byzantine members and what they do.
    members: Vec<(ReplicaId, Behaviour)>,
    /// faulty-chunk-servers: per seed that got that far, the simulated time (ms) from the lagging member's restart
    /// to its adopting the state.
    catch_up_ms: Vec<u64>,
    /// lone-suspicion: per seed in which the suspecter left view 0, the simulated time (ms) from the heal until it
    /// votes in the cluster's view.
    votes_again_ms: Vec<u64>,
    /// equivocating-new-primary: per seed, the simulated time (ms) from the Byzantine primary's first NEW-VIEW to
    /// the first proof of it an honest member holds.
    new_view_proof_ms: Vec<u64>,
    /// fabricated-certificate: per seed, the simulated time (ms) from the Byzantine member's first VIEW-CHANGE to the
    /// first proof of it an honest member holds.
    certificate_proof_ms: Vec<u64>,
    /// Per Byzantine behaviour: the seeds a member ran it, and those in which honest replicas proved that member.
    behaviours: std::collections::BTreeMap<&'static str, BehaviourSeeds>,
    /// twins: seeds in which the twinned member's two instances signed conflicting messages (`Outcome::twin_conflicts`).
    twin_conflict_seeds: u64,
    failing_seeds: Vec<u64>,
    failures: Vec<Outcome>,
}

#[derive(Default, serde::Serialize)]
struct BehaviourSeeds {
    seeds: u64,
    proven: u64,
}

fn parse_member(text: &str) -> Result<(ReplicaId, Behaviour), String> {
    let (id, behaviour) = text
        .split_once('=')
        .ok_or("expected ID=BEHAVIOUR, e.g. 5=corrupt-signatures")?;
    let id: ReplicaId = id.parse().map_err(|_| format!("member id {id:?} is not a number"))?;
    Ok((id, behaviour.parse()?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let f = (args.replicas.max(1) - 1) / 3;
    let byzantine = args.byzantine.max(args.members.len());
    if let Some((id, _)) = args
        .members
        .iter()
        .find(|(id, _)| *id == 0 || *id as usize > args.replicas)
    {
        eprintln!("bft-sim: member {id} does not exist in a cluster of {}", args.replicas);
        return ExitCode::from(2);
    }
    if args.replicas < 4 || byzantine > f {
        eprintln!("bft-sim: need --replicas >= 4 and --byzantine <= F = {f}");
        return ExitCode::from(2);
    }
    let mut summary = Summary {
        seeds: args.seeds,
        replicas: args.replicas,
        byzantine,
        committed: 0,
        applied: 0,
        rejected: 0,
        view_changes: 0,
        violations: 0,
        liveness_failures: 0,
        refused: Default::default(),
        proven: Default::default(),
        quarantined: Default::default(),
        reconfigured: 0,
        members: args.members.clone(),
        catch_up_ms: Vec::new(),
        votes_again_ms: Vec::new(),
        new_view_proof_ms: Vec::new(),
        certificate_proof_ms: Vec::new(),
        behaviours: Default::default(),
        twin_conflict_seeds: 0,
        failing_seeds: Vec::new(),
        failures: Vec::new(),
    };
    for seed in args.first_seed..args.first_seed + args.seeds {
        let mut config = SimConfig::new(seed, args.replicas, args.byzantine);
        config.clients = args.clients.max(2);
        config.transfers_per_client = args.transfers;
        config.verbose = args.trace;
        config.byzantine = byzantine;
        config.pinned = args.members.clone();
        config.reconfigure = args.reconfigure;
        config.scenario = args.scenario;
        config.accounts = args.accounts;
        if args.calm {
            (config.loss, config.duplication, config.crashes, config.partitions) = (0.0, 0.0, false, false);
        }
        let outcome = sim::run(config);
        summary.committed += outcome.committed;
        summary.applied += outcome.applied;
        summary.rejected += outcome.rejected;
        summary.view_changes += outcome.view_changes;
        summary.violations += outcome.violations.len() as u64;
        summary.liveness_failures += u64::from(outcome.liveness_failure.is_some());
        for member in outcome.quarantined.keys() {
            *summary.quarantined.entry(*member).or_default() += 1;
        }
        summary.reconfigured += u64::from(outcome.epoch > 0);
        summary.catch_up_ms.extend(outcome.catch_up_ms);
        summary.votes_again_ms.extend(outcome.votes_again_ms);
        summary.new_view_proof_ms.extend(outcome.new_view_proof_ms);
        summary.certificate_proof_ms.extend(outcome.certificate_proof_ms);
        for (member, behaviour) in &outcome.byzantine {
            let seeds = summary.behaviours.entry(behaviour.name()).or_default();
            seeds.seeds += 1;
            seeds.proven += u64::from(outcome.proven.contains_key(member));
        }
        summary.twin_conflict_seeds += u64::from(outcome.twin_conflicts > 0);
        for (label, count) in &outcome.rejections {
            *summary.refused.entry(label).or_default() += count;
        }
        for (member, count) in &outcome.proven {
            *summary.proven.entry(*member).or_default() += count;
        }
        if args.verbose && !args.json {
            println!(
                "seed {seed}: committed {} view changes {} sim time {} ms trace {} byzantine {:?} scenario {:?} reached {:?} catch-up {:?} ms",
                outcome.committed,
                outcome.view_changes,
                outcome.sim_time_ms,
                outcome.trace,
                outcome.byzantine,
                outcome.scenario.map(|s| s.name()),
                outcome.scenario_reached,
                outcome.catch_up_ms
            );
        }
        if !outcome.ok() {
            if !args.json {
                let scenario = match (&outcome.scenario, &outcome.scenario_reached) {
                    (Some(s), reached) => format!(", scenario {} reached {reached:?}", s.name()),
                    (None, _) => String::new(),
                };
                println!("seed {seed} FAILED (byzantine {:?}{scenario})", outcome.byzantine);
                for v in &outcome.violations {
                    println!("  violation: {v}");
                }
                if let Some(l) = &outcome.liveness_failure {
                    println!("  liveness: {l}");
                }
            }
            summary.failing_seeds.push(seed);
            summary.failures.push(outcome);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
    } else {
        println!(
            "{} seeds, N = {}, {} Byzantine: {} transfers committed ({} applied, {} rejected by the ledger), \
             {} view changes, {} violations, {} liveness failures",
            summary.seeds,
            summary.replicas,
            summary.byzantine,
            summary.committed,
            summary.applied,
            summary.rejected,
            summary.view_changes,
            summary.violations,
            summary.liveness_failures
        );
        if let (Some(min), Some(max)) = (summary.catch_up_ms.iter().min(), summary.catch_up_ms.iter().max()) {
            println!(
                "state transfer: a lagging member caught up in {min}-{max} ms of simulated time ({} seeds)",
                summary.catch_up_ms.len()
            );
        }
        if let (Some(min), Some(max)) = (summary.votes_again_ms.iter().min(), summary.votes_again_ms.iter().max()) {
            println!(
                "lone suspicion: the healed member voted again {min}-{max} ms after the heal (the {} of {} seeds in \
                 which it had left view 0)",
                summary.votes_again_ms.len(),
                args.seeds
            );
        }
        if let (Some(min), Some(max)) = (
            summary.new_view_proof_ms.iter().min(),
            summary.new_view_proof_ms.iter().max(),
        ) {
            println!(
                "equivocating new primary: proven {min}-{max} ms after its first NEW-VIEW ({} seeds)",
                summary.new_view_proof_ms.len()
            );
        }
        if let (Some(min), Some(max)) = (
            summary.certificate_proof_ms.iter().min(),
            summary.certificate_proof_ms.iter().max(),
        ) {
            println!(
                "fabricated certificate: proven {min}-{max} ms after its first VIEW-CHANGE ({} seeds)",
                summary.certificate_proof_ms.len()
            );
        }
        let proven: Vec<String> = summary
            .behaviours
            .iter()
            .map(|(name, s)| format!("{name} in {} of {} seeds", s.proven, s.seeds))
            .collect();
        if !proven.is_empty() {
            println!("Byzantine members proven: {}", proven.join(", "));
        }
        if summary.behaviours.contains_key("twins") {
            println!(
                "twins: the two instances signed conflicting messages in {} seeds",
                summary.twin_conflict_seeds
            );
        }
        if !summary.failing_seeds.is_empty() {
            println!("failing seeds: {:?}", summary.failing_seeds);
        }
    }
    if summary.failing_seeds.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
