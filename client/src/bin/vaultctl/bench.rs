//! `vaultctl bench`: drives a running vault with C concurrent requests over
//! several connections for D seconds per workload, and reports RPC/s,
//! fields/s and p50/p99/p999 latency, with the ratio to the baseline
//! (`grpc.health.v1` Check).
//!
//! Workloads: `health` (baseline), `tokenize` (a six-field traveller record
//! of unique values, a new subject each time), `detokenize` (six tokens of one
//! record stored by the tokenize run, or by a short seeding phase), `card`
//! (a checkout's card: number, expiry, cardholder name and CVV, a new
//! subject each time), `erase` (stores `--erase-subjects` subjects of 50
//! values each, then erases all of them, C at a time, with the privacy
//! officer's `--erase-token`: erasures/s and latency per erasure; it runs
//! until done, not for D seconds).
//!
//! With `--rounds N` the list of workloads runs N times in turn and each
//! workload is reported over all its rounds: on a machine whose speed drifts
//! (a shared VM), the baseline and the workloads compared with it are then
//! measured under the same conditions.

use crate::Failure;
use crate::output::print_table;
use hdrhistogram::Histogram;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vault_client::proto::{FieldValue, TokenizeRequest};
use vault_client::{ClientError, Target, VaultClient};

/// Options of `vaultctl bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent requests in flight.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// TCP connections the requests are spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds per workload.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up before each measured workload.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Times the list of workloads runs, in turn; each workload is reported
    /// over all its rounds (`erase` runs in the first only).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Workloads to run, in order (health is the baseline; also `card`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "health,tokenize,detokenize"
    )]
    pub workloads: Vec<Workload>,
    /// Purpose stated on reveals. The default suits a booking_service
    /// principal, which sees every field of a bench record plain or masked.
    #[arg(long, default_value = "booking")]
    pub purpose: String,
    /// Subjects the `erase` workload stores and then erases.
    #[arg(long, default_value_t = 1000)]
    pub erase_subjects: u64,
    /// Bearer token of a principal that may erase (a privacy officer), for
    /// the `erase` workload (the main token stores the subjects).
    #[arg(long, env = "VAULTCTL_ERASE_TOKEN", hide_env_values = true)]
    pub erase_token: Option<String>,
}

/// A bench workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `grpc.health.v1` Check: the baseline.
    Health,
    /// Tokenize of a six-field traveller record.
    Tokenize,
    /// Detokenize of six tokens.
    Detokenize,
    /// Tokenize of a card at checkout: number, expiry, name and CVV.
    Card,
    /// Erase of a subject holding 50 values.
    Erase,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Tokenize => "tokenize",
            Self::Detokenize => "detokenize",
            Self::Card => "card",
            Self::Erase => "erase",
        }
    }

    fn fields_per_request(self) -> u64 {
        match self {
            Self::Health => 0,
            Self::Tokenize | Self::Detokenize => 6,
            Self::Card => 4,
            Self::Erase => ERASE_FIELDS,
        }
    }
}

/// The result of one workload.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Which workload.
    pub workload: Workload,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
}

impl BenchResult {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// Adds another round of the same workload.
    fn absorb(&mut self, other: BenchResult) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.seconds += other.seconds;
        let _ = self.latency.add(other.latency);
    }
}

/// A six-field traveller record with values unique to (`run`, `n`).
pub fn traveller(run: u64, n: u64) -> TokenizeRequest {
    let f = |field: &str, value: String| FieldValue {
        field: field.to_owned(),
        value,
    };
    TokenizeRequest {
        subject_id: format!("bench-{run}-{n}"),
        fields: vec![
            f("full_name", format!("Bench Traveller {}", letters(n))),
            f("email", format!("bench.{run}.{n}@example.com")),
            f(
                "phone",
                format!(
                    "+1{:010}",
                    2_000_000_000 + (run % 1000) * 1_000_000 + n % 1_000_000
                ),
            ),
            f(
                "mailing_address",
                format!("{} Harbour Road, Springfield", n),
            ),
            f("postal_code", format!("SW{} {}AA", 1 + n % 9, n % 10)),
            f("card_number", test_card(4_000_000 + n)),
        ],
        purposes: vec!["booking".into()],
        policy_version: "bench".into(),
        travel_end_date: String::new(),
    }
}

/// Values per subject of the `erase` workload.
const ERASE_FIELDS: u64 = 50;

/// A subject of 50 values unique to (`run`, `n`), as ten Tokenize requests
/// (a field once per request): ten each of name, email, phone, mailing
/// address and postal code.
pub fn fifty_values(run: u64, n: u64) -> Vec<TokenizeRequest> {
    (0..ERASE_FIELDS / 5)
        .map(|i| {
            let mut req = traveller(run, n * 16 + i);
            req.subject_id = format!("bench-erase-{run}-{n}");
            req.fields.truncate(5);
            req
        })
        .collect()
}

/// A checkout's card with a number unique to `n`: number, expiry (December
/// of the year after next), cardholder name and CVV.
pub fn card(run: u64, n: u64) -> TokenizeRequest {
    let f = |field: &str, value: String| FieldValue {
        field: field.to_owned(),
        value,
    };
    let year = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 31_556_952 + 1970);
    TokenizeRequest {
        subject_id: format!("bench-card-{run}-{n}"),
        fields: vec![
            f("card_number", test_card(n)),
            f("card_expiry", format!("12/{:02}", (year + 2) % 100)),
            f("cardholder_name", format!("Bench Holder {}", letters(n))),
            f("card_cvv", format!("{:03}", n % 1000)),
        ],
        purposes: vec![],
        policy_version: "bench".into(),
        travel_end_date: String::new(),
    }
}

/// A Luhn-valid 16-digit test card number (BIN 4111 11) ending in `n`.
fn test_card(n: u64) -> String {
    let body = format!("411111{:09}", n % 1_000_000_000);
    let mut sum = 0u32;
    for (i, b) in body.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// `n` spelled in letters (names may not contain digits).
fn letters(mut n: u64) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

async fn connect_all(target: &Target, n: usize) -> Result<Vec<VaultClient>, ClientError> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        // One connection each: Target::connect opens a new channel.
        clients.push(target.connect().await?);
    }
    Ok(clients)
}

/// Runs one workload with `concurrency` tasks for `duration` after `warmup`.
pub async fn run_workload(
    clients: &[VaultClient],
    workload: Workload,
    args: &BenchArgs,
    pool: Arc<Vec<Vec<String>>>,
    run_id: u64,
) -> BenchResult {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency.max(1) {
        let mut client = clients[i % clients.len()].clone();
        let counter = counter.clone();
        let pool = pool.clone();
        let purpose = args.purpose.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let r = match workload {
                    Workload::Health => client.health("").await.map(|_| ()),
                    Workload::Tokenize => client
                        .tokenize_request(traveller(run_id, n))
                        .await
                        .map(|_| ()),
                    Workload::Detokenize => {
                        let tokens = &pool[(n as usize) % pool.len().max(1)];
                        client.detokenize(tokens, &purpose).await.map(|_| ())
                    }
                    Workload::Card => client.tokenize_request(card(run_id, n)).await.map(|_| ()),
                    // Runs apart (see `erase_all`).
                    Workload::Erase => Ok(()),
                };
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    match r {
                        Ok(()) => {
                            ok += 1;
                            let micros = u64::try_from(t1.duration_since(t0).as_micros())
                                .unwrap_or(u64::MAX);
                            hist.saturating_record(micros);
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
            (ok, errors, hist)
        }));
    }
    let mut total = new_histogram();
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((o, e, h)) = t.await {
            ok += o;
            errors += e;
            let _ = total.add(h);
        }
    }
    BenchResult {
        workload,
        ok,
        errors,
        seconds: args.duration,
        latency: total,
    }
}

/// A histogram of 1 µs to 60 s at 3 significant digits.
#[allow(clippy::expect_used)] // constant, valid bounds: this cannot fail
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Stores `n` records for the detokenize workload, `concurrency` at a time;
/// returns their tokens.
async fn seed_pool(
    clients: &[VaultClient],
    concurrency: usize,
    run_id: u64,
    n: u64,
) -> Result<Vec<Vec<String>>, ClientError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..concurrency.max(1) {
        let mut client = clients[i % clients.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return Ok::<_, ClientError>(mine);
                }
                let resp = client
                    .tokenize_request(traveller(run_id, u64::MAX / 2 + k))
                    .await?;
                mine.push(resp.tokens.into_iter().map(|t| t.token).collect());
            }
        }));
    }
    let mut pool = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for t in tasks {
        match t.await {
            Ok(r) => pool.extend(r?),
            Err(e) => {
                return Err(ClientError {
                    code: tonic::Code::Internal,
                    message: e.to_string(),
                    violations: vec![],
                });
            }
        }
    }
    Ok(pool)
}

/// The `erase` workload: stores `args.erase_subjects` subjects of 50
/// values, then erases every one with `erase_token`, `args.concurrency` at
/// a time, timing each erasure.
async fn erase_all(
    target: &Target,
    clients: &[VaultClient],
    args: &BenchArgs,
    run_id: u64,
) -> Result<BenchResult, Failure> {
    let Some(token) = args.erase_token.as_deref() else {
        return Err(Failure::Usage(
            "the erase workload needs --erase-token (a privacy officer's)".into(),
        ));
    };
    let n = args.erase_subjects.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let mut seeding = Vec::new();
    for i in 0..args.concurrency.max(1) {
        let mut client = clients[i % clients.len()].clone();
        let next = next.clone();
        seeding.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return Ok::<_, ClientError>(());
                }
                for req in fifty_values(run_id, k) {
                    client.tokenize_request(req).await?;
                }
            }
        }));
    }
    for t in seeding {
        t.await.map_err(|e| Failure::Usage(e.to_string()))??;
    }
    eprintln!("bench: stored {n} subjects of {ERASE_FIELDS} values; erasing them");
    let mut officers = Vec::with_capacity(clients.len());
    for _ in 0..clients.len().max(1) {
        officers.push(
            target
                .connect()
                .await?
                .with_token(token)
                .map_err(|e| Failure::Usage(e.to_string()))?,
        );
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency.max(1) {
        let mut client = officers[i % officers.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return (ok, errors, hist);
                }
                let subject = format!("bench-erase-{run_id}-{k}");
                let t0 = Instant::now();
                match client.erase(&subject, "bench").await {
                    Ok(_) => {
                        ok += 1;
                        hist.saturating_record(
                            u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
                        );
                    }
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let mut latency = new_histogram();
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((o, e, h)) = t.await {
            ok += o;
            errors += e;
            let _ = latency.add(h);
        }
    }
    Ok(BenchResult {
        workload: Workload::Erase,
        ok,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latency,
    })
}

/// Runs `vaultctl bench` and prints the report.
pub async fn run(
    target: &Target,
    args: BenchArgs,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if args.concurrency == 0
        || args.connections == 0
        || args.rounds == 0
        || args.duration <= 0.0
        || args.warmup < 0.0
    {
        return Err(Failure::Usage(
            "concurrency, connections, rounds and duration must be positive".into(),
        ));
    }
    let clients = connect_all(target, args.connections).await?;
    // Values written by a run (subject ids, emails) are unique to its id;
    // each round takes a new one.
    let new_run_id = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    };
    // One result per entry of the workload list, summed over the rounds.
    let mut results: Vec<BenchResult> = Vec::with_capacity(args.workloads.len());
    let mut pool = Arc::new(Vec::new());
    for round in 1..=args.rounds {
        let run_id = new_run_id();
        for (i, &w) in args.workloads.iter().enumerate() {
            if w == Workload::Detokenize && pool.is_empty() {
                pool = Arc::new(seed_pool(&clients, args.concurrency, run_id, 1000).await?);
            }
            let r = if w == Workload::Erase {
                if round > 1 {
                    continue;
                }
                erase_all(target, &clients, &args, run_id).await?
            } else {
                let of = if args.rounds > 1 {
                    format!(", round {round} of {}", args.rounds)
                } else {
                    String::new()
                };
                eprintln!(
                    "bench: {} for {}s (+{}s warm-up), C={}{of}",
                    w.name(),
                    args.duration,
                    args.warmup,
                    args.concurrency
                );
                run_workload(&clients, w, &args, pool.clone(), run_id).await
            };
            match results.get_mut(i) {
                Some(sum) => sum.absorb(r),
                None => results.push(r),
            }
        }
    }
    let baseline = results
        .iter()
        .find(|r| r.workload == Workload::Health)
        .map(BenchResult::rps);
    let ratio = |r: &BenchResult| baseline.filter(|b| *b > 0.0).map(|b| r.rps() / b);
    if json {
        let v: Vec<_> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "workload": r.workload.name(), "concurrency": args.concurrency,
                    "connections": args.connections, "rounds": args.rounds, "seconds": r.seconds,
                    "ok": r.ok, "errors": r.errors, "rpc_per_s": r.rps(),
                    "fields_per_s": r.rps() * r.workload.fields_per_request() as f64,
                    "p50_us": r.latency.value_at_quantile(0.5), "p99_us": r.latency.value_at_quantile(0.99),
                    "p999_us": r.latency.value_at_quantile(0.999), "ratio_to_baseline": ratio(r),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))?;
    } else {
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                vec![
                    r.workload.name().to_owned(),
                    format!("{:.0}", r.rps()),
                    format!("{:.0}", r.rps() * r.workload.fields_per_request() as f64),
                    format!("{:.2}", r.latency.value_at_quantile(0.5) as f64 / 1000.0),
                    format!("{:.2}", r.latency.value_at_quantile(0.99) as f64 / 1000.0),
                    format!("{:.2}", r.latency.value_at_quantile(0.999) as f64 / 1000.0),
                    ratio(r).map_or("-".into(), |x| format!("{x:.2}")),
                    r.errors.to_string(),
                ]
            })
            .collect();
        print_table(
            out,
            &[
                "WORKLOAD",
                "RPC/S",
                "FIELDS/S",
                "P50_MS",
                "P99_MS",
                "P999_MS",
                "VS_BASELINE",
                "ERRORS",
            ],
            &rows,
        )?;
    }
    Ok(())
}
