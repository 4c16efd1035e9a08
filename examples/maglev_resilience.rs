//! The Maglev paper's resilience experiment (NSDI 2016, figure 13).
//!
//! N backends (default 1000); remove k = 1..=100 of them at random (seeded)
//! and measure the share of flows that move to another backend, for
//! Maglev (M = 65537 and M = 655373), beside the ideal k/N and a plain
//! `hash % N` table. Prints a table and writes an SVG plot.
//!
//! ```text
//! cargo run --release --example maglev_resilience [-- --out target/maglev_resilience.svg]
//! ```
use clap::Parser;
use flowpin::maglev::Maglev;
use plotters::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::error::Error;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Maglev resilience: share of flows moved when k of N backends go away")]
struct Args {
    /// Where to write the SVG plot.
    #[arg(long, default_value = "target/maglev_resilience.svg")]
    out: PathBuf,
    /// Number of backends.
    #[arg(long, default_value_t = 1000)]
    backends: usize,
    /// Remove k = 1..=max_removed backends.
    #[arg(long, default_value_t = 100)]
    max_removed: usize,
    /// Number of simulated flows (random 64-bit flow hashes).
    #[arg(long, default_value_t = 1_000_000)]
    flows: usize,
    /// Seed of the removal order and of the flow hashes.
    #[arg(long, default_value_t = 2016)]
    seed: u64,
}

const SIZES: [u32; 2] = [65537, 655_373];

/// (legend label, colour, share of flows moved for a row)
type Series = (&'static str, RGBColor, fn(&Row) -> f64);

struct Row {
    k: usize,
    maglev: [f64; 2],
    modulo: f64,
    ideal: f64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let n = args.backends;
    if args.max_removed >= n {
        return Err(format!(
            "--max-removed ({}) must be below --backends ({n})",
            args.max_removed
        )
        .into());
    }
    let keys: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.{}:443", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let flows: Vec<u64> = (0..args.flows).map(|_| rng.random()).collect();

    let full: Vec<Maglev> = SIZES
        .iter()
        .map(|&m| Maglev::build(&keys, m))
        .collect::<Result<_, _>>()?;
    // Backend of every flow with all backends present, as a key index.
    let before_maglev: Vec<Vec<u32>> = full
        .iter()
        .map(|t| flows.iter().map(|&h| t.lookup(h)).collect())
        .collect();
    let before_modulo: Vec<usize> = flows.iter().map(|&h| (h % n as u64) as usize).collect();

    let mut rows = Vec::with_capacity(args.max_removed);
    for k in 1..=args.max_removed {
        let gone: HashSet<usize> = order[..k].iter().copied().collect();
        let alive: Vec<usize> = (0..n).filter(|i| !gone.contains(i)).collect();
        let alive_keys: Vec<&str> = alive.iter().map(|&i| keys[i].as_str()).collect();

        let mut maglev = [0.0; 2];
        for (s, &m) in SIZES.iter().enumerate() {
            let t = Maglev::build(&alive_keys, m)?;
            let moved = flows
                .iter()
                .zip(&before_maglev[s])
                .filter(|&(&h, &was)| alive[t.lookup(h) as usize] != was as usize)
                .count();
            maglev[s] = moved as f64 / flows.len() as f64;
        }
        let moved = flows
            .iter()
            .zip(&before_modulo)
            .filter(|&(&h, &was)| alive[(h % alive.len() as u64) as usize] != was)
            .count();
        rows.push(Row {
            k,
            maglev,
            modulo: moved as f64 / flows.len() as f64,
            ideal: k as f64 / n as f64,
        });
    }

    println!(
        "share of {} flows moved after removing k of N = {n} backends (seed {})",
        flows.len(),
        args.seed
    );
    println!(
        "{:>4}  {:>14}  {:>15}  {:>8}  {:>9}",
        "k", "Maglev M=65537", "Maglev M=655373", "ideal", "hash % N"
    );
    for r in rows.iter().filter(|r| r.k <= 5 || r.k % 10 == 0) {
        println!(
            "{:>4}  {:>13.3}%  {:>14.3}%  {:>7.3}%  {:>8.3}%",
            r.k,
            r.maglev[0] * 100.0,
            r.maglev[1] * 100.0,
            r.ideal * 100.0,
            r.modulo * 100.0
        );
    }

    plot(&args, &rows)?;
    let path = std::fs::canonicalize(&args.out).unwrap_or_else(|_| args.out.clone());
    println!("plot written to {}", path.display());
    Ok(())
}

fn plot(args: &Args, rows: &[Row]) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(&args.out, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_k = rows.len() as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Flows moved when k of {} backends are removed (log scale)",
                args.backends
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0u32..max_k, (0.05f64..100.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("k backends removed")
        .y_desc("flows moved (%)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;

    let series: [Series; 4] = [
        ("hash % N", RED, |r| r.modulo),
        ("Maglev M=65537", BLUE, |r| r.maglev[0]),
        ("Maglev M=655373", GREEN, |r| r.maglev[1]),
        ("ideal k/N", BLACK, |r| r.ideal),
    ];
    for (label, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                rows.iter()
                    .map(|r| (r.k as u32, (value(r) * 100.0).max(0.05))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
