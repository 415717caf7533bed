//! `slipway crds`: the CRD YAML that `config/crd/` holds, generated from the Rust types.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write the files into.
    #[arg(long, default_value = "config/crd")]
    output_dir: PathBuf,
    /// Print all CRDs to stdout as one multi-document YAML instead of writing files.
    #[arg(long)]
    stdout: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let files = slipway_api::crd_files();
    if args.stdout {
        let documents: Vec<&str> = files.iter().map(|(_, yaml)| yaml.as_str()).collect();
        print!("{}", documents.join("---\n"));
        return Ok(());
    }
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    for (name, yaml) in files {
        let path = args.output_dir.join(&name);
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == yaml);
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{} {}",
            if unchanged { "unchanged" } else { "wrote" },
            path.display()
        );
    }
    Ok(())
}
