//! The `gateway` command: `serve`, `migrate`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::config::Config;
use gateway::startup::{self, Database};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Domizan Gateway: event-sourced backend for Domizan"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded Postgres under DATA_DIR when DATABASE_URL is unset).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    gateway::telemetry::init(
        config.is_production() || std::env::var("LOG_FORMAT").as_deref() == Ok("json"),
    );
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let database = Database::open(&config).await?;
            let result = database.migrate().await;
            database.close().await?;
            result?;
            println!("migrations applied");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let address = listener.local_addr()?;
    if let (Some(file), Some(admin)) = (&config.dev_secrets_file, &config.bootstrap_admin) {
        // Where to find the credentials, never the credentials themselves.
        println!("Domizan Gateway (development) on http://{address}");
        println!(
            "  admin login:   {} (password, X-Admin-Secret and landing API key in {})",
            admin.email,
            file.display()
        );
        println!("  health:        curl http://{address}/health");
    }
    startup::run(config, listener, startup::shutdown_signal()).await
}
