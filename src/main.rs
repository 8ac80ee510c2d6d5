//! `valet`: parse the command line, load and validate the config (exit 78 on a bad one), start
//! telemetry, run the daemon or a client command.

use clap::Parser as _;
use std::process::ExitCode;
use valet::cli::{Cli, Command};
use valet::config::{Config, Overrides};

/// sysexits.h EX_CONFIG.
const EXIT_CONFIG: u8 = 78;

fn load_config(args: &valet::cli::ServeArgs) -> Result<Config, ExitCode> {
    Config::load_from_process_env(&Overrides::from(args)).map_err(|e| {
        eprintln!("valet: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    valet::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("valet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            let config = match load_config(&args) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // The OTLP exporter is built on the runtime.
            let telemetry = {
                let _entered = runtime.enter();
                valet::telemetry::init(
                    config.log_format,
                    &config.log_level,
                    config.otlp_endpoint.as_ref(),
                )
            };
            // The signal handlers go in before anything is bound or announced.
            let served = runtime
                .block_on(async { valet::App::run(config, valet::signal::shutdown()).await });
            // The runtime's workers still run the exporter's connection while it flushes.
            telemetry.shutdown();
            served
        }
        Command::CheckConfig(args) => {
            let config = match load_config(&args) {
                Ok(c) => c,
                Err(code) => return code,
            };
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            // The files it names first: a config is not shown as valid when the daemon would
            // refuse to start on it.
            valet::app::App::check_files(&config).and_then(|()| {
                valet::cli::out(format_args!("{}", config.render()));
                runtime.block_on(valet::ops::check_store(&config))
            })
        }
        other => runtime.block_on(valet::cli::run_client(other)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("valet: {e:#}");
            // A config file a tool read (`valet store copy`) is as bad as the daemon's.
            if e.downcast_ref::<valet::config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
