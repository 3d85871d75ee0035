//! `provisioner`: parse the command line, set up logging, run.

use clap::Parser;
use provisioner::app;
use provisioner::cmd::cli::{BootstrapCmd, Cli, Command, ImportFrom};
use provisioner::cmd::{client, commands};
use provisioner::config::LogFormat;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROVISIONER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    // One rustls crypto provider for the whole process (crates.md §4).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { cfg, dry_run } => commands::load_config(&cfg).and_then(|c| {
            init_tracing(c.log_format);
            let rt = tokio::runtime::Runtime::new()?;
            if dry_run {
                rt.block_on(app::dry_run(c))
            } else {
                rt.block_on(app::serve(c))
            }
        }),
        Command::Check { cfg } => commands::check(&cfg),
        Command::DhcpSnippet { target, cfg } => commands::dhcp_snippet(target, &cfg),
        Command::Render {
            mac,
            uuid,
            arch,
            platform,
            cfg,
        } => commands::render_machine(&mac, uuid, &arch, &platform, &cfg),
        Command::Export { format, output, cfg } => commands::export(format, output.as_deref(), &cfg),
        Command::Import {
            from: None,
            file: Some(file),
            cfg,
        } => commands::import(&file, &cfg),
        Command::Import {
            from: None,
            file: None,
            ..
        } => Err(anyhow::anyhow!(
            "import: give an export file, or `import talhelper <talconfig.yaml>`"
        )),
        Command::Import {
            from:
                Some(ImportFrom::Talhelper {
                    file,
                    output,
                    force,
                    env_files,
                    age_key,
                    cfg,
                }),
            ..
        } => provisioner::cmd::talos::import_talhelper(
            &file,
            output.as_deref(),
            force,
            (&env_files, age_key.as_deref()),
            &cfg,
        ),
        Command::Talos { cmd, cfg } => provisioner::cmd::talos::run(cmd, &cfg),
        Command::Images { cmd, cfg } => provisioner::cmd::images::run(cmd, &cfg),
        Command::Backup {
            output,
            include_images,
            recipients,
            insecure_plaintext,
            cfg,
        } => commands::backup(&output, include_images, &recipients, insecure_plaintext, &cfg),
        Command::Restore {
            file,
            identity,
            force,
            cfg,
        } => commands::restore(&file, identity.as_deref(), force, &cfg),
        Command::Bootstrap {
            cmd: BootstrapCmd::Status { cfg },
        } => commands::clusters_status(&cfg),
        Command::Machines { cmd, api, cfg } => client::machines(&cmd, &api, &cfg),
        Command::Clusters { cmd, api, cfg } => client::clusters(&cmd, &api, &cfg),
        Command::Events {
            follow,
            mac,
            api,
            cfg,
        } => client::events(follow, mac.as_deref(), &api, &cfg),
        Command::Token { cmd, cfg } => client::token::run(&cmd, &cfg),
        Command::K0s { cmd, cfg } => provisioner::cmd::k0s::run(cmd, &cfg),
        Command::Doctor(args) => provisioner::cmd::doctor::run(&args),
        Command::Completions { shell } => {
            provisioner::cmd::completions::completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man { output } => {
            provisioner::cmd::completions::man(output.as_deref(), &mut std::io::stdout()).map(|pages| {
                for p in pages {
                    println!("{}", p.display());
                }
            })
        }
        Command::Version => {
            println!("provisioner {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
