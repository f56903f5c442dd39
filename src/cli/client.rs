//! `tsecho client`: talk to a server interactively or from a pipe.
//!
//! Streams: interactive mode sends a line and prints its reply; piped mode
//! streams stdin up while printing replies as they come, half-closes at EOF
//! and ends when the server closes. Datagrams: one datagram per line, each
//! retried until answered or given up on.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::runtime::Runtime;
use tsecho::Endpoint;
use tsecho::client::{ClientStream, Connector, DatagramSocket, human_duration};

use super::late_replies::{Fit, History};
use tsecho::error::{describe, io_exit_code};
use tsecho::tls::client::ClientTlsArgs;

use super::parse_duration;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT,
    /// unix:///path, unixgram:///path, unix://@abstract.
    #[arg(default_value = tsecho::settings::DEFAULT_URL, env = "TSECHO_URL")]
    url: String,

    /// Datagrams: how long to wait for each reply.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,

    /// Datagrams: how many times to resend a line that got no reply.
    #[arg(long, default_value_t = 2)]
    retries: u32,

    /// Streams: how long to wait for the connection (and TLS handshake).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,

    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Returns the exit code.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let endpoint: Endpoint = args.url.parse()?;
    let runtime = super::single_thread_runtime()?;
    let interactive = std::io::stdin().is_terminal();
    if endpoint.transport.is_datagram() {
        let sock = runtime.block_on(DatagramSocket::connect(&endpoint))?;
        return exchange_datagrams(&runtime, &sock, &endpoint, &args, interactive);
    }
    let connector = Connector::new(&endpoint, args.connect_timeout, &args.tls)?;
    let stream = runtime.block_on(connector.connect())?;
    if interactive {
        converse(&runtime, stream)?;
        return Ok(0);
    }
    let piped = runtime.block_on(pipe(stream));
    // Stdin is read on a blocking thread that nothing can interrupt; once
    // the server has closed, the client ends without waiting for it, as
    // nc and socat do.
    runtime.shutdown_background();
    piped.map(|()| 0)
}

/// Lines typed at a prompt (an empty line or Ctrl-D ends), or read from a pipe.
enum Lines {
    Prompt(Box<DefaultEditor>),
    Piped(std::io::StdinLock<'static>),
}

impl Lines {
    fn new(interactive: bool) -> anyhow::Result<Self> {
        Ok(if interactive {
            Lines::Prompt(Box::new(
                DefaultEditor::new().context("opening the terminal")?,
            ))
        } else {
            Lines::Piped(std::io::stdin().lock())
        })
    }

    /// The next line without its newline.
    fn next_line(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        match self {
            Lines::Prompt(editor) => match editor.readline("> ") {
                Ok(line) if line.is_empty() => Ok(None),
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Ok(Some(line.into_bytes()))
                }
                Err(ReadlineError::Eof) => Ok(None),
                Err(ReadlineError::Interrupted) => Err(tsecho::Error::Interrupted.into()),
                Err(e) => Err(e).context("reading the terminal"),
            },
            Lines::Piped(stdin) => {
                let mut line = Vec::new();
                if stdin
                    .read_until(b'\n', &mut line)
                    .context("reading stdin")?
                    == 0
                {
                    return Ok(None);
                }
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                Ok(Some(line))
            }
        }
    }
}

fn print_reply(reply: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(reply)?;
    if !reply.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn exchange_datagrams(
    runtime: &Runtime,
    sock: &DatagramSocket,
    endpoint: &Endpoint,
    args: &Args,
    interactive: bool,
) -> anyhow::Result<i32> {
    let mut lines = Lines::new(interactive)?;
    // The exit code of the last failure: 75 for silence, 69 for refused.
    let mut failed = 0;
    let mut reply = vec![0; 65_536];
    let mut history = History::default();
    while let Some(line) = lines.next_line()? {
        match runtime.block_on(ask(sock, &line, &mut reply, args, &mut history)) {
            Ok(n) => print_reply(&reply[..n])?,
            Err(e) => {
                failed = io_exit_code(&e);
                eprintln!(
                    "tsecho: no reply from {endpoint} to {:?}: {}",
                    String::from_utf8_lossy(&line),
                    describe(&e)
                );
            }
        }
    }
    Ok(failed)
}

/// Sends one datagram and waits for its reply, resending on silence.
/// Replies to earlier lines that come meanwhile are reported as late on
/// stderr, not taken for this line's.
async fn ask(
    sock: &DatagramSocket,
    line: &[u8],
    reply: &mut [u8],
    args: &Args,
    history: &mut History,
) -> std::io::Result<usize> {
    for _ in 0..=args.retries {
        sock.send(line).await?;
        let deadline = tokio::time::Instant::now() + args.timeout;
        while let Ok(received) = tokio::time::timeout_at(deadline, sock.recv(reply)).await {
            let n = received?;
            match history.fit(&reply[..n], line) {
                Fit::Ours => {
                    history.answered(line);
                    return Ok(n);
                }
                Fit::Late(earlier) => eprintln!(
                    "tsecho: late reply to {:?}: {:?}",
                    String::from_utf8_lossy(&earlier),
                    String::from_utf8_lossy(&reply[..n])
                ),
                Fit::Again(earlier) => eprintln!(
                    "tsecho: another reply to {:?}, ignored",
                    String::from_utf8_lossy(&earlier)
                ),
            }
        }
    }
    history.gave_up(line);
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "timed out after {} tries of {} each",
            args.retries + 1,
            human_duration(args.timeout)
        ),
    ))
}

/// Prompt, send, print the reply, until an empty line or Ctrl-D.
fn converse(runtime: &Runtime, stream: Box<dyn ClientStream>) -> anyhow::Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let mut lines = Lines::new(true)?;
    let mut reply = Vec::new();
    while let Some(mut line) = lines.next_line()? {
        line.push(b'\n');
        runtime
            .block_on(writer.write_all(&line))
            .context("sending")?;
        reply.clear();
        let n = runtime
            .block_on(reader.read_until(b'\n', &mut reply))
            .context("receiving")?;
        if n == 0 {
            eprintln!("tsecho: the server closed the connection");
            break;
        }
        print_reply(&reply)?;
    }
    let _ = runtime.block_on(writer.shutdown());
    Ok(())
}

/// Streams stdin to the server and replies to stdout at the same time;
/// half-closes at the end of stdin and finishes when the server closes.
async fn pipe(stream: Box<dyn ClientStream>) -> anyhow::Result<()> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let upload = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut writer).await?;
        writer.shutdown().await
    });
    let mut stdout = tokio::io::stdout();
    let copied = tokio::io::copy(&mut reader, &mut stdout).await;
    stdout.flush().await.context("writing stdout")?;
    copied.context("receiving")?;
    // The server has closed: whatever stdin still holds has nowhere to go.
    upload.abort();
    Ok(())
}
