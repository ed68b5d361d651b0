//! Secured listeners of the real broker (`scripts/kafka start` makes them: SASL_SSL,
//! SSL with client certificates required, SASL_PLAINTEXT, and a SASL_SSL listener with a
//! 3 s session lifetime): every mechanism and mTLS end to end, every failure as a typed
//! error at once, secrets never shown, re-authentication, and other clients reading what
//! Paperboy writes (and the other way round).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::security::{OAuthToken, TokenFuture, TokenProvider};
use paperboy::{Client, ClientConfig, Error, TopicPartition};

/// The secured listeners and client files, from `listeners.env` in the directory
/// `scripts/kafka security-dir` prints (`PAPERBOY_SECURITY_DIR`, or `.kafka/security`).
struct Env(HashMap<String, String>);

impl Env {
    fn load() -> Env {
        common::init_tracing();
        let dir = std::env::var("PAPERBOY_SECURITY_DIR").map_or_else(
            |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".kafka/security"),
            PathBuf::from,
        );
        let file = dir.join("listeners.env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "no secured listeners ({}: {e}); start the broker with `scripts/kafka start` \
                 (integration tests never skip)",
                file.display()
            )
        });
        Env(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("listeners.env has no {key}"))
    }

    /// Properties reaching `listener` with `mechanism` (None: no SASL).
    fn props(&self, listener: &str, mechanism: Option<&str>) -> Vec<(String, String)> {
        let tls = matches!(listener, "SASL_SSL" | "SSL" | "REAUTH");
        let protocol = match (tls, mechanism.is_some()) {
            (true, true) => "SASL_SSL",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (false, false) => "PLAINTEXT",
        };
        let mut p = vec![
            (
                "bootstrap.servers".to_owned(),
                self.get(listener).to_owned(),
            ),
            ("security.protocol".to_owned(), protocol.to_owned()),
            (
                "socket.connection.setup.timeout.ms".to_owned(),
                "10000".to_owned(),
            ),
        ];
        if tls {
            p.push(("ssl.ca.location".into(), self.get("CA").into()));
        }
        if listener == "SSL" {
            p.push((
                "ssl.certificate.location".into(),
                self.get("CLIENT_CERT").into(),
            ));
            p.push(("ssl.key.location".into(), self.get("CLIENT_KEY").into()));
        }
        match mechanism {
            None => {}
            Some("OAUTHBEARER") => {
                p.push(("sasl.mechanism".into(), "OAUTHBEARER".into()));
                p.push(("enable.sasl.oauthbearer.unsecure.jwt".into(), "true".into()));
                p.push(("sasl.oauthbearer.config".into(), "principal=alice".into()));
            }
            Some(m) => {
                p.push(("sasl.mechanism".into(), m.into()));
                p.push(("sasl.username".into(), self.get("SASL_USER").into()));
                p.push(("sasl.password".into(), self.get("SASL_PASSWORD").into()));
            }
        }
        p
    }
}

fn with(mut props: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    props.retain(|(k, _)| k != key);
    props.push((key.to_owned(), value.to_owned()));
    props
}

fn without(mut props: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
    props.retain(|(k, _)| k != key);
    props
}

async fn client(props: &[(String, String)]) -> paperboy::Result<Client> {
    Client::connect(ClientConfig::from_properties(props.iter().cloned())?).await
}

/// Writes `n` records to a new topic over `props`, consumes them in a group over the same
/// listener, commits, and checks contents and the committed offset.
async fn round_trip(props: Vec<(String, String)>, n: usize) {
    let admin = client(&props).await.expect("connect");
    let topic = common::unique_topic("secure");
    admin
        .create_topics(&[paperboy::NewTopic::new(&topic, 1, 1)])
        .await
        .expect("create topic");
    let producer = Producer::new(
        ProducerConfig::from_properties(with(props.clone(), "linger.ms", "5")).unwrap(),
    )
    .await
    .expect("producer");
    let mut pending = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(&topic)
            .with_key(format!("k{i}"))
            .with_value(format!("secured value {i}"));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    for (i, d) in pending.into_iter().enumerate() {
        assert_eq!(d.await.expect("delivered").offset, i as i64);
    }
    producer.close().await;

    let group = common::unique_topic("secure-group");
    let mut cprops = props.clone();
    cprops.extend([
        ("group.id".to_owned(), group.clone()),
        ("auto.offset.reset".to_owned(), "earliest".to_owned()),
        ("enable.auto.commit".to_owned(), "false".to_owned()),
    ]);
    let consumer = Consumer::new(ConsumerConfig::from_properties(cprops).unwrap())
        .await
        .expect("consumer");
    consumer.subscribe(&[&topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        assert!(Instant::now() < deadline, "read {} of {n}", got.len());
        let batch = consumer
            .recv_batch(n, Duration::from_millis(500))
            .await
            .expect("recv");
        consumer.commit_records(&batch).await.expect("commit");
        got.extend(batch);
    }
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(
            r.value.as_deref(),
            Some(format!("secured value {i}").as_bytes())
        );
    }
    let tp = TopicPartition::new(&topic, 0);
    let committed = consumer.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(committed[&tp], Some(n as i64));
    consumer.close().await;
}

#[tokio::test]
async fn sasl_ssl_plain() {
    let env = Env::load();
    round_trip(env.props("SASL_SSL", Some("PLAIN")), 50).await;
}

#[tokio::test]
async fn sasl_ssl_scram_sha_256() {
    let env = Env::load();
    round_trip(env.props("SASL_SSL", Some("SCRAM-SHA-256")), 50).await;
}

#[tokio::test]
async fn sasl_ssl_scram_sha_512() {
    let env = Env::load();
    round_trip(env.props("SASL_SSL", Some("SCRAM-SHA-512")), 50).await;
}

#[tokio::test]
async fn sasl_ssl_oauthbearer_unsecured_jwt() {
    let env = Env::load();
    round_trip(env.props("SASL_SSL", Some("OAUTHBEARER")), 50).await;
}

#[tokio::test]
async fn sasl_plaintext_plain_and_scram() {
    let env = Env::load();
    round_trip(env.props("SASL_PLAINTEXT", Some("PLAIN")), 20).await;
    round_trip(env.props("SASL_PLAINTEXT", Some("SCRAM-SHA-256")), 20).await;
}

#[tokio::test]
async fn mtls_with_a_plain_and_an_encrypted_key() {
    let env = Env::load();
    round_trip(env.props("SSL", None), 50).await;
    let props = with(
        env.props("SSL", None),
        "ssl.key.location",
        env.get("CLIENT_ENC_KEY"),
    );
    let props = with(props, "ssl.key.password", env.get("KEY_PASSWORD"));
    round_trip(props, 10).await;
}

#[tokio::test]
async fn pem_given_inline_and_hostname_check_off() {
    let env = Env::load();
    let read = |k: &str| std::fs::read_to_string(env.get(k)).unwrap();
    let props = without(env.props("SSL", None), "ssl.ca.location");
    let props = without(
        without(props, "ssl.certificate.location"),
        "ssl.key.location",
    );
    let props = with(props, "ssl.ca.pem", &read("CA"));
    let props = with(props, "ssl.certificate.pem", &read("CLIENT_CERT"));
    let props = with(props, "ssl.key.pem", &read("CLIENT_KEY"));
    round_trip(props, 5).await;
    // 127.0.0.1 is not in the broker's certificate: accepted only with the check off.
    let port = env.get("SASL_SSL").rsplit_once(':').unwrap().1.to_owned();
    let by_ip = with(
        env.props("SASL_SSL", Some("SCRAM-SHA-512")),
        "bootstrap.servers",
        &format!("127.0.0.1:{port}"),
    );
    let by_ip = with(by_ip, "ssl.endpoint.identification.algorithm", "none");
    client(&by_ip).await.expect("no hostname check");
}

/// A token provider that counts how often it is asked.
struct Counting {
    asked: std::sync::atomic::AtomicUsize,
    lifetime: Duration,
}

impl TokenProvider for Counting {
    fn token(&self) -> TokenFuture<'_> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lifetime = self.lifetime;
        Box::pin(async move {
            // An unsigned JWT, as the test broker's default validator accepts.
            use std::time::UNIX_EPOCH;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            use base64::Engine as _;
            let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            let token = format!(
                "{}.{}.",
                b64(r#"{"alg":"none"}"#.to_owned()),
                b64(format!(
                    r#"{{"sub":"alice","iat":{now},"exp":{}}}"#,
                    now + lifetime.as_secs()
                ))
            );
            Ok(OAuthToken::new(token, SystemTime::now() + lifetime))
        })
    }
}

#[tokio::test]
async fn oauthbearer_with_a_token_provider() {
    let env = Env::load();
    let provider = Arc::new(Counting {
        asked: Default::default(),
        lifetime: Duration::from_secs(3600),
    });
    let props = without(env.props("SASL_SSL", None), "security.protocol");
    let cfg = ClientConfig::from_properties(props)
        .unwrap()
        .with_security_protocol(paperboy::security::SecurityProtocol::SaslSsl)
        .with_oauthbearer_token_provider(provider.clone());
    let client = Client::connect(cfg)
        .await
        .expect("connect with a provider's token");
    let topic = common::new_topic(&client, "secure-oauth", 1).await;
    let cluster = client.refresh_metadata(&[&topic]).await.unwrap();
    assert!(cluster.topic(&topic).is_some());
    // Two connections (bootstrap, then the broker by its advertised name), one token.
    assert_eq!(provider.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Connects with `props`, expecting a failure within a few seconds (no retry loop up to
/// a timeout), and returns the error.
async fn fails_at_once(props: Vec<(String, String)>) -> Error {
    let props = with(props, "request.timeout.ms", "30000");
    let started = Instant::now();
    let e = client(&props).await.expect_err("connecting must fail");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed only after {:?}: {e}",
        started.elapsed()
    );
    eprintln!("failed in {:?}: {e}", started.elapsed());
    e
}

#[tokio::test]
async fn wrong_credentials_fail_at_once_naming_what_to_check() {
    let env = Env::load();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let props = with(
            env.props("SASL_SSL", Some(mechanism)),
            "sasl.password",
            "not-the-password",
        );
        let e = fails_at_once(props).await;
        let Error::Authentication {
            mechanism: m,
            message,
            ..
        } = &e
        else {
            panic!("{mechanism}: expected an authentication error, got {e:?}");
        };
        assert_eq!(m, mechanism);
        assert!(message.contains("sasl.username and sasl.password"), "{e}");
        assert!(!e.to_string().contains("not-the-password"), "{e}");
        assert!(e.is_auth() && !e.is_retriable());
    }
    let props = with(
        env.props("SASL_SSL", Some("SCRAM-SHA-256")),
        "sasl.username",
        "nobody",
    );
    let e = fails_at_once(props).await;
    assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
}

#[tokio::test]
async fn a_mechanism_the_listener_does_not_enable_is_named_with_the_enabled_ones() {
    let env = Env::load();
    let e = fails_at_once(env.props("SASL_PLAINTEXT", Some("SCRAM-SHA-512"))).await;
    let msg = e.to_string();
    assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
    assert!(msg.contains("does not enable SCRAM-SHA-512"), "{msg}");
    assert!(
        msg.contains("PLAIN") && msg.contains("SCRAM-SHA-256"),
        "{msg}"
    );
}

#[tokio::test]
async fn certificate_problems_are_tls_errors_saying_what_to_check() {
    let env = Env::load();
    // No CA given: the system's roots do not know the test CA.
    let e = fails_at_once(without(
        env.props("SASL_SSL", Some("PLAIN")),
        "ssl.ca.location",
    ))
    .await;
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(
        e.to_string().contains("not trusted") && e.to_string().contains("ssl.ca.location"),
        "{e}"
    );

    // By IP: the certificate names only localhost.
    let port = env.get("SASL_SSL").rsplit_once(':').unwrap().1.to_owned();
    let e = fails_at_once(with(
        env.props("SASL_SSL", Some("PLAIN")),
        "bootstrap.servers",
        &format!("127.0.0.1:{port}"),
    ))
    .await;
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("not valid for `127.0.0.1`"), "{e}");
    assert!(
        e.to_string()
            .contains("ssl.endpoint.identification.algorithm"),
        "{e}"
    );

    // mTLS listener without a client certificate.
    let props = without(
        without(env.props("SSL", None), "ssl.certificate.location"),
        "ssl.key.location",
    );
    let e = fails_at_once(props).await;
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("client certificate"), "{e}");

    // A key that is not the certificate's.
    let props = with(
        env.props("SSL", None),
        "ssl.key.location",
        env.get("OTHER_KEY"),
    );
    let e = fails_at_once(props).await;
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("does not match the client certificate"),
        "{e}"
    );

    // An encrypted key with the wrong password.
    let props = with(
        env.props("SSL", None),
        "ssl.key.location",
        env.get("CLIENT_ENC_KEY"),
    );
    let e = fails_at_once(with(props.clone(), "ssl.key.password", "not-this-pass")).await;
    assert!(
        e.to_string()
            .contains("does not decrypt with ssl.key.password"),
        "{e}"
    );
    assert!(!format!("{e} {e:?}").contains("not-this-pass"), "{e}");
    let e = fails_at_once(props).await;
    assert!(
        e.to_string().contains("is encrypted: set ssl.key.password"),
        "{e}"
    );
}

#[tokio::test]
async fn plaintext_and_tls_mixed_up_are_named() {
    let env = Env::load();
    // A plaintext client on the TLS listener.
    let e = fails_at_once(vec![
        ("bootstrap.servers".into(), env.get("SSL").into()),
        ("socket.connection.setup.timeout.ms".into(), "5000".into()),
    ])
    .await;
    let msg = e.to_string();
    assert!(msg.contains("security.protocol=SSL or SASL_SSL"), "{e:?}");

    // A TLS client on the plaintext listener.
    let props = with(
        env.props("SSL", None),
        "bootstrap.servers",
        &common::bootstrap(),
    );
    let e = fails_at_once(props).await;
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("plaintext listener"), "{e}");

    // A SASL client on a listener without SASL.
    let props = with(
        env.props("SASL_PLAINTEXT", Some("PLAIN")),
        "bootstrap.servers",
        &common::bootstrap(),
    );
    let e = fails_at_once(props).await;
    assert!(e.is_auth(), "{e:?}");
    assert!(e.to_string().contains("security.protocol"), "{e}");
}

/// A tracing writer that keeps everything written, to check the logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let me = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter("paperboy=trace")
            .with_writer(move || me.clone())
            .with_ansi(false)
            .finish()
    }
}

#[test]
fn secrets_never_reach_logs_debug_output_or_errors() {
    let env = Env::load();
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let password = env.get("SASL_PASSWORD").to_owned();
    let key_text = std::fs::read_to_string(env.get("CLIENT_KEY")).unwrap();
    let key_body: String = key_text.lines().nth(1).unwrap().to_owned();
    rt.block_on(async {
        for mechanism in ["PLAIN", "SCRAM-SHA-512", "OAUTHBEARER"] {
            let props = env.props("SASL_SSL", Some(mechanism));
            let cfg = ClientConfig::from_properties(props.clone()).unwrap();
            let debug = format!("{cfg:?} {cfg:#?}");
            assert!(!debug.contains(&password), "{debug}");
            let c = Client::connect(cfg).await.expect("connect");
            c.refresh_metadata(&[]).await.unwrap();
            c.close().await;
            let bad = with(props, "sasl.password", "wrong-secret-xyz");
            if let Err(e) = client(&bad).await {
                assert!(!format!("{e} {e:?}").contains("wrong-secret-xyz"), "{e:?}");
            }
        }
        let props = with(env.props("SSL", None), "ssl.key.pem", &key_text);
        let props = without(props, "ssl.key.location");
        let cfg = ClientConfig::from_properties(props).unwrap();
        assert!(!format!("{cfg:?}").contains(&key_body));
        Client::connect(cfg).await.expect("mTLS with an inline key");
    });
    let text = logs.text();
    assert!(text.contains("authenticated"), "the capture works: {text}");
    for secret in [
        password.as_str(),
        "wrong-secret-xyz",
        key_body.as_str(),
        "auth=Bearer",
    ] {
        assert!(!text.contains(secret), "`{secret}` in the logs");
    }
}

#[test]
fn reauthentication_keeps_producer_and_consumer_working() {
    let env = Env::load();
    let lifetime = Duration::from_millis(env.get("REAUTH_MS").parse().unwrap());
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run_for = lifetime * 4;
    rt.block_on(async {
        let admin = client(&env.props("REAUTH", Some("SCRAM-SHA-256")))
            .await
            .expect("connect");
        let topic = common::new_topic(&admin, "secure-reauth", 1).await;
        let producer = Producer::new(
            ProducerConfig::from_properties(env.props("REAUTH", Some("SCRAM-SHA-512"))).unwrap(),
        )
        .await
        .unwrap();
        let mut cprops = env.props("REAUTH", Some("OAUTHBEARER"));
        cprops.extend([
            ("group.id".to_owned(), common::unique_topic("reauth-group")),
            ("auto.offset.reset".to_owned(), "earliest".to_owned()),
            ("enable.auto.commit".to_owned(), "false".to_owned()),
        ]);
        let consumer = Consumer::new(ConsumerConfig::from_properties(cprops).unwrap())
            .await
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let started = Instant::now();
        let mut sent = 0i64;
        let mut got = Vec::new();
        while started.elapsed() < run_for {
            let d = producer
                .send(ProducerRecord::new(&topic).with_value(format!("r{sent}")))
                .await
                .expect("send across re-authentications");
            assert_eq!(d.offset, sent);
            sent += 1;
            let batch = consumer
                .recv_batch(100, Duration::from_millis(100))
                .await
                .expect("recv across re-authentications");
            consumer.commit_records(&batch).await.expect("commit");
            got.extend(batch);
        }
        while (got.len() as i64) < sent {
            let batch = consumer
                .recv_batch(100, Duration::from_secs(1))
                .await
                .unwrap();
            assert!(!batch.is_empty(), "read {} of {sent}", got.len());
            got.extend(batch);
        }
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.value.as_deref(), Some(format!("r{i}").as_bytes()));
        }
        assert!(sent > 20, "only {sent} records in {run_for:?}");
        producer.close().await;
        consumer.close().await;
    });
    let text = logs.text();
    let reauths = text.matches("re-authenticated").count();
    let closed = text.matches("connection closed").count();
    let failed = text.matches("re-authentication failed").count();
    eprintln!("{reauths} re-authentications, {closed} connections closed in {run_for:?}");
    // Producer, consumer fetch and coordinator connections, ~4 lifetimes each.
    assert!(reauths >= 6, "only {reauths} re-authentications");
    assert_eq!(failed, 0, "{text}");
    // Connections end only when the clients close (a few at most), not every lifetime.
    assert!(
        closed <= 8,
        "{closed} connections closed: a reconnect storm?"
    );
}

// ---------------------------------------------------------------------------------------
// Other clients on the secured listeners.

fn run(cmd: &mut Command, what: &str, stdin: Option<&str>) -> String {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} did not run ({e}); it is needed for the interop tests"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

async fn write_values(props: Vec<(String, String)>, topic: &str, n: usize) -> Vec<String> {
    let producer = Producer::new(ProducerConfig::from_properties(props).unwrap())
        .await
        .unwrap();
    let values: Vec<String> = (0..n).map(|i| format!("pb-secure-{i}")).collect();
    for v in &values {
        producer
            .send(
                ProducerRecord::new(topic)
                    .with_partition(0)
                    .with_value(v.clone()),
            )
            .await
            .unwrap();
    }
    producer.close().await;
    values
}

fn kcat_security(env: &Env, listener: &str) -> Vec<String> {
    let mut args = vec!["-b".to_owned(), env.get(listener).to_owned()];
    let mut x = |k: &str, v: &str| {
        args.push("-X".to_owned());
        args.push(format!("{k}={v}"));
    };
    match listener {
        "SASL_SSL" => {
            x("security.protocol", "SASL_SSL");
            x("sasl.mechanisms", "PLAIN");
            x("sasl.username", env.get("SASL_USER"));
            x("sasl.password", env.get("SASL_PASSWORD"));
            x("ssl.ca.location", env.get("CA"));
        }
        "SSL" => {
            x("security.protocol", "SSL");
            x("ssl.ca.location", env.get("CA"));
            x("ssl.certificate.location", env.get("CLIENT_CERT"));
            x("ssl.key.location", env.get("CLIENT_KEY"));
        }
        other => panic!("no kcat settings for {other}"),
    }
    args
}

#[tokio::test]
async fn kcat_reads_what_paperboy_writes_over_sasl_ssl_plain_and_mtls() {
    let env = Env::load();
    for (listener, mechanism) in [("SASL_SSL", Some("PLAIN")), ("SSL", None)] {
        let props = env.props(listener, mechanism);
        let admin = client(&props).await.unwrap();
        let topic = common::new_topic(&admin, "secure-kcat", 1).await;
        let values = write_values(props, &topic, 20).await;
        let mut cmd = Command::new("kcat");
        cmd.args(kcat_security(&env, listener))
            .args(["-C", "-t", &topic, "-p", "0", "-o", "beginning", "-e", "-q"])
            .args(["-f", "%s\n"]);
        let out = run(&mut cmd, "kcat", None);
        let read: Vec<&str> = out.lines().collect();
        assert_eq!(read, values, "kcat over {listener}");
    }
}

#[tokio::test]
async fn paperboy_reads_what_kcat_writes_over_tls() {
    let env = Env::load();
    let props = env.props("SSL", None);
    let admin = client(&props).await.unwrap();
    let topic = common::new_topic(&admin, "secure-from-kcat", 1).await;
    let input: String = (0..25).map(|i| format!("from-kcat-{i}\n")).collect();
    let mut cmd = Command::new("kcat");
    cmd.args(kcat_security(&env, "SSL"))
        .args(["-P", "-t", &topic, "-p", "0"]);
    run(&mut cmd, "kcat -P", Some(&input));
    // Read back over another listener and mechanism: SASL_SSL with SCRAM.
    let scram = Client::connect(
        ClientConfig::from_properties(env.props("SASL_SSL", Some("SCRAM-SHA-512"))).unwrap(),
    )
    .await
    .unwrap();
    let records = common::read_partition(&scram, &topic, 0, 0, 25).await;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.2.clone().unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("from-kcat-{i}")).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn the_java_console_consumer_reads_what_paperboy_writes_over_scram() {
    let env = Env::load();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let props = env.props("SASL_SSL", Some(mechanism));
        let admin = client(&props).await.unwrap();
        let topic = common::new_topic(&admin, "secure-java", 1).await;
        let values = write_values(props, &topic, 10).await;
        let dir = std::env::var("PAPERBOY_SECURITY_DIR").map_or_else(
            |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".kafka/security"),
            PathBuf::from,
        );
        let config = dir.join(format!(
            "java-sasl_ssl-{}.properties",
            mechanism.to_ascii_lowercase()
        ));
        assert!(config.exists(), "{} is missing", config.display());
        let mut cmd = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka"));
        cmd.args([
            "console-consumer",
            "--bootstrap-server",
            env.get("SASL_SSL"),
        ])
        .args([
            "--topic",
            &topic,
            "--from-beginning",
            "--max-messages",
            "10",
        ])
        .args(["--timeout-ms", "30000", "--consumer.config"])
        .arg(&config);
        let out = run(&mut cmd, "the Java console consumer", None);
        let read: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("pb-secure-"))
            .collect();
        assert_eq!(read, values, "Java over {mechanism}");
    }
}

#[tokio::test]
async fn the_cli_reaches_the_secured_listeners_through_x_properties() {
    let env = Env::load();
    let admin = client(&env.props("SSL", None)).await.unwrap();
    let topic = common::new_topic(&admin, "secure-cli", 2).await;
    let x = |props: Vec<(String, String)>| -> Vec<String> {
        props
            .into_iter()
            .filter(|(k, _)| k != "bootstrap.servers")
            .flat_map(|(k, v)| ["-X".to_owned(), format!("{k}={v}")])
            .collect()
    };
    let input: String = (0..100).map(|i| format!("k{i}:cli-secure-{i}\n")).collect();
    // Written over mTLS...
    let mut produce = Command::new(env!("CARGO_BIN_EXE_paperboy"));
    produce
        .args([
            "produce",
            "-b",
            env.get("SSL"),
            "-t",
            &topic,
            "-K",
            ":",
            "-q",
        ])
        .args(x(env.props("SSL", None)));
    run(&mut produce, "paperboy produce over mTLS", Some(&input));
    // ...read in a group over SASL_PLAINTEXT with OAUTHBEARER.
    let mut consume = Command::new(env!("CARGO_BIN_EXE_paperboy"));
    consume
        .args(["consume", "-b", env.get("SASL_PLAINTEXT"), "-t", &topic])
        .args([
            "-G",
            &common::unique_topic("cli-group"),
            "--from-beginning",
            "-e",
            "-q",
        ])
        .args(x(env.props("SASL_PLAINTEXT", Some("OAUTHBEARER"))));
    let out = run(&mut consume, "paperboy consume over SASL_PLAINTEXT", None);
    let mut values: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["value"].as_str().unwrap().to_owned()
        })
        .collect();
    values.sort_by_key(|v| v.rsplit('-').next().unwrap().parse::<u32>().unwrap());
    let expected: Vec<String> = (0..100).map(|i| format!("cli-secure-{i}")).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn a_rustls_config_of_ones_own_is_used_as_given() {
    use paperboy::security::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let env = Env::load();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(env.get("CA")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(env.get("CLIENT_CERT"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(env.get("CLIENT_KEY")).unwrap();
    let tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls_graviola::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    // No ssl.* properties: the handed-over configuration carries the CA and the client
    // certificate that the mTLS listener requires.
    let cfg = ClientConfig::new(env.get("SSL"))
        .with_security_protocol(paperboy::security::SecurityProtocol::Ssl)
        .with_tls_config(Arc::new(tls));
    let client = Client::connect(cfg)
        .await
        .expect("mTLS with a rustls config of our own");
    let topic = common::new_topic(&client, "secure-own-tls", 1).await;
    assert!(client
        .refresh_metadata(&[&topic])
        .await
        .unwrap()
        .topic(&topic)
        .is_some());
}
