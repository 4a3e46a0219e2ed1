//! The `alertprof` command: parse flags, set up logging, hand over to the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use alertprof::config::{CaptureConfig, Config};
use alertprof::manual;
use alertprof::model::ProfileKind;
use alertprof::model::text::{counted, quantity};
use alertprof::perf::PerfTarget;

/// Catches performance spikes of Go services in the act: pprof profiles on alerts,
/// re-verified locally, kept safely, marked in Grafana.
#[derive(Parser)]
#[command(name = "alertprof", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `alertprof=debug` (or set RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file; print every problem with its place and exit 1 if there are any.
    CheckConfig {
        /// The YAML config file.
        #[arg(required_unless_present = "config", conflicts_with = "config", value_name = "FILE")]
        file: Option<PathBuf>,
        /// The same, as `serve` takes it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Capture one profile by hand from a pprof base URL, e.g. http://127.0.0.1:6060, or with
    /// --profile perf, of a process or cgroup of this host.
    Capture {
        /// Base URL of the service, e.g. 127.0.0.1:6060; /debug/pprof/... is appended (a URL
        /// that already ends in /debug/pprof is taken as the base above it). Not with perf.
        url: Option<String>,
        /// Profile kind: cpu, heap, allocs, block, mutex, threadcreate, goroutine,
        /// goroutine_text, trace, fgprof, or perf (sampled here with the kernel's perf
        /// events: give --pid or --cgroup instead of a URL).
        #[arg(long)]
        profile: ProfileKind,
        /// Seconds a timed profile (cpu, trace, fgprof, perf) runs.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=300))]
        seconds: u32,
        /// With --profile perf: the process to sample, every thread of it.
        #[arg(long, conflicts_with_all = ["url", "cgroup"])]
        pid: Option<u32>,
        /// With --profile perf: a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/x.service),
        /// every process in it.
        #[arg(long, conflicts_with = "url")]
        cgroup: Option<PathBuf>,
        /// With --profile perf: samples a second of CPU time.
        #[arg(long, default_value_t = 99, value_parser = clap::value_parser!(u32).range(1..=1000))]
        frequency: u32,
        /// Directory to write the profile to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// Threads for blocking work (file I/O, /proc and cgroup reads, profile validation).
const MAX_BLOCKING_THREADS: usize = 16;

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        // Without the module path: its key is `target`, which the events' own `target` (the
        // alertprof target a line is about) would share, and a JSON reader keeps one.
        LogFormat::Json => builder.json().flatten_event(true).with_target(false).init(),
    }
}

/// `check-config`: `valid`, or every problem with its place (exit 1).
fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: valid ({}, {})",
                file.display(),
                counted(config.targets.len(), "target"),
                counted(config.rules.len(), "rule")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let problems = error.problems();
            eprintln!("{}: {}", file.display(), counted(problems.len(), "problem"));
            for problem in problems {
                eprintln!("  {problem}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    alertprof::init();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // The error's causes, each said once (a message that names its cause is not
            // followed by it again).
            eprintln!("alertprof: {}", alertprof::http::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    // Few blocking threads: local sampling, validation and file writes queue for them
    // rather than growing the pool to one thread per target (500 targets sampled at once
    // would otherwise start hundreds, each with its own stack and allocator heap).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        Command::Serve { config } => {
            runtime.block_on(alertprof::server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file, config } => {
            let file = file.or(config).expect("clap requires one");
            check_config(&file)
        }
        Command::Capture { url, profile, seconds, pid, cgroup, frequency, out } => {
            let kept = match (profile, url, pid, cgroup) {
                (ProfileKind::Perf, None, Some(pid), None) => runtime.block_on(manual::capture_perf(
                    PerfTarget::Pid(pid),
                    seconds,
                    frequency,
                    &out,
                    true,
                ))?,
                (ProfileKind::Perf, None, None, Some(cgroup)) => runtime.block_on(manual::capture_perf(
                    PerfTarget::Cgroup(cgroup),
                    seconds,
                    frequency,
                    &out,
                    true,
                ))?,
                (ProfileKind::Perf, ..) => {
                    anyhow::bail!(
                        "--profile perf samples a process of this host: give --pid PID or --cgroup DIR, not a URL"
                    )
                }
                (_, Some(url), None, None) => {
                    let settings = CaptureConfig {
                        max_profile_bytes: 1 << 30,
                        shutdown_grace: std::time::Duration::ZERO,
                        ..CaptureConfig::default()
                    };
                    let (url, note) = manual::base_url(&url)?;
                    if let Some(note) = note {
                        eprintln!("alertprof: {note}");
                    }
                    runtime.block_on(manual::capture(&url, profile, seconds, &out, settings, true))?
                }
                (_, None, None, None) => anyhow::bail!(
                    "--profile {profile} needs the service's pprof base URL, e.g. 127.0.0.1:6060"
                ),
                (..) => anyhow::bail!(
                    "--pid and --cgroup go with --profile perf only; --profile {profile} takes a URL"
                ),
            };
            print_kept(&kept, profile);
            println!("open it with: {}", profile.open_command(&kept.path.display().to_string()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `capture` says of the profile it kept: where, its size and digest, its top
/// functions, its warnings and, for perf, its counts.
fn print_kept(kept: &manual::Kept, profile: ProfileKind) {
    println!("{} ({} bytes, sha256 {})", kept.path.display(), kept.fetched.bytes, kept.fetched.sha256);
    if let Some(summary) = &kept.summary {
        println!("top functions ({}):", summary.sample_type);
        let unit = alertprof::model::summary::unit_of(&summary.sample_type);
        for row in &summary.top {
            let (flat, cum) = (quantity(row.flat, unit), quantity(row.cum, unit));
            println!(
                "  {flat:>12} {:>6.1}%  {cum:>12} {:>6.1}%  {}",
                row.flat_percent, row.cum_percent, row.function
            );
        }
        if summary.total == 0 {
            println!("  (no samples)");
        }
    }
    for warning in kept.warnings(profile) {
        eprintln!("alertprof: warning: {warning}");
    }
    if let Some(perf) = &kept.perf {
        println!("perf: {}", perf.line());
        for binary in &perf.unreadable_binaries {
            eprintln!("alertprof: warning: frames left unnamed: {binary}");
        }
    }
}
