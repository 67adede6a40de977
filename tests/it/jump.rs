//! Jump hosts against chains of real sshds: the target is reached through each hop's
//! `direct-tcpip` channel (its TCP peer is the last hop's sshd, never the gateway), every
//! hop's host key is checked before anything is sent to it, errors name the hop, the
//! destination policy judges every host of the route, and nothing is left behind.

use std::collections::HashSet;
use std::fs;
use std::time::Duration;

use serde_json::{Value, json};

use crate::kbd_auth::{
    PAM_OTP, PAM_PASSWORD, answer, exit, expect_prompt, otp_code, pam_sshd, wrong_code,
};
use crate::support::gateway::{ADMIN_TOKEN, Gateway};
use crate::support::password_body;
use crate::support::sshd::{Sshd, TEST_USER, test_password};
use crate::support::term::Term;

/// A create-session body for `target` through `hops`, the test user with its password
/// everywhere.
fn through(target: &Sshd, hops: &[&Sshd]) -> Value {
    let mut body = password_body(target);
    body["jump"] = hops.iter().map(|h| password_body(h)).collect();
    body
}

fn endpoint(sshd: &Sshd) -> String {
    format!("{TEST_USER}@127.0.0.1:{}", sshd.port)
}

/// The route as status and `connection-ready` name it.
fn route(target: &Sshd, hops: &[&Sshd]) -> String {
    let hops: Vec<String> = hops.iter().map(|h| endpoint(h)).collect();
    format!("{} via {}", endpoint(target), hops.join(", "))
}

/// Expects `ssh-error` with `code` at `hop` (`None`: no `hop` field), then the close.
async fn expect_error_at(term: &mut Term, code: &str, hop: Option<u64>) -> String {
    let data = term.expect("ssh-error").await;
    assert_eq!(data["code"], code, "{data}");
    assert_eq!(data["hop"].as_u64(), hop, "{data}");
    assert_eq!(data.get("hop").is_some(), hop.is_some(), "{data}");
    term.expect_close().await;
    data["message"].as_str().unwrap().to_owned()
}

/// The socket inodes a process holds (`/proc/<pid>/fd` links `socket:[inode]`).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?.to_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `/proc/net/tcp`: (local port, remote port, state, inode) of each IPv4 TCP socket.
fn tcp_sockets() -> Vec<(u16, u16, String, u64)> {
    let table = fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = |addr: &str| {
        let (_, hex) = addr.split_once(':')?;
        u16::from_str_radix(hex, 16).ok()
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((
                port(f.get(1)?)?,
                port(f.get(2)?)?,
                (*f.get(3)?).to_owned(),
                f.get(9)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The inodes of every UNIX socket (`/proc/net/unix`, 7th column).
fn unix_inodes() -> HashSet<u64> {
    let table = fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
        .collect()
}

/// Held by every test here for its whole run: only relays make UNIX sockets in this process,
/// so with one jump test at a time the count `held` takes is this test's alone.
static RELAYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the relay could leave behind in this process (the gateway runs in it): TCP sockets
/// connected to `ports`, and UNIX sockets. Other tests running meanwhile open neither of
/// those to these sshds, no other code of the gateway makes UNIX sockets, and the other
/// jump tests wait for `RELAYS`.
fn held(ports: &[u16]) -> (usize, usize) {
    let ours = socket_inodes(std::process::id());
    let tcp = tcp_sockets()
        .into_iter()
        .filter(|(_, remote, state, inode)| {
            ports.contains(remote) && state != "0A" && ours.contains(inode)
        })
        .count();
    let unix = unix_inodes().intersection(&ours).count();
    (tcp, unix)
}

/// Polls until `held(ports)` is back to `start` (closing is asynchronous to the test).
async fn assert_released(ports: &[u16], start: (usize, usize)) {
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        let now = held(ports);
        if now.0 == 0 && now.1 <= start.1 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "descriptors left: {now:?} (tcp to {ports:?}, unix) against {start:?} at the start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    // Bounded: a process tree this deep is not one sshd makes.
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(parent) if parent != 0 && parent != pid => pid = parent,
            _ => return false,
        }
    }
    false
}

/// The PIDs holding the client end of every established connection to `port`.
fn clients_of(port: u16) -> Vec<u32> {
    let inodes: HashSet<u64> = tcp_sockets()
        .into_iter()
        .filter(|(_, remote, state, inode)| *remote == port && state == "01" && *inode != 0)
        .map(|(_, _, _, inode)| inode)
        .collect();
    let pids = fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    pids.filter(|&pid| !socket_inodes(pid).is_disjoint(&inodes))
        .collect()
}

/// The target's TCP peer is a process of the last jump host's sshd, never this process
/// (the gateway runs in it).
fn assert_peer_is(target: &Sshd, last_hop: &Sshd) {
    let clients = clients_of(target.port);
    let hop_pid = last_hop.pid().expect("the jump sshd runs");
    assert!(!clients.is_empty(), "no connection to the target");
    assert!(
        !clients.contains(&std::process::id()),
        "the gateway itself connects to the target: {clients:?}"
    );
    for pid in &clients {
        assert!(
            descends_from(*pid, hop_pid),
            "the target's peer {pid} is not of the jump sshd {hop_pid}"
        );
    }
}

/// One jump host: the shell works, the route is named, the target's peer is the jump
/// host, the exit status comes back, and every descriptor is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_jump_host() {
    let _relays = RELAYS.lock().await;
    let jump = Sshd::start();
    let target = Sshd::start();
    let ports = [jump.port, target.port];
    let start = held(&ports);
    let gw = Gateway::start().await;
    let id = gw.create_id(&through(&target, &[&jump])).await;
    let mut term = gw.ws().await;
    term.start(&id, 90, 30).await;
    let ready = term.ready().await;
    assert_eq!(ready["target"], route(&target, &[&jump]), "{ready}");
    assert_eq!(term.run("stty size").await, "30 90\r\n");
    assert_peer_is(&target, &jump);
    let status = gw.get_as(&format!("/sessions/{id}"), ADMIN_TOKEN).await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(status.json()["target"], route(&target, &[&jump]));
    assert!(
        held(&ports).1 > start.1,
        "the relay's socket pair is counted"
    );

    term.input("exit 3\r").await;
    let closed = term.expect("ssh-closed").await;
    assert_eq!(closed["exit_status"], 3, "{closed}");
    assert_eq!(term.expect_close().await, Some(1000));
    gw.assert_idle().await;
    assert_released(&ports, start).await;
    gw.stop().await;
}

/// Hosts behind a jump host authenticate as direct ones do: a PAM-only password server
/// gets the password over keyboard-interactive, a one-time code is asked in the page, and
/// an interactive hop and target each ask the person, every prompt naming who asks. The
/// person's time at a prompt behind the hop is not the connect timeout's, and
/// `--auth-prompt-timeout` bounds it there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_behind_a_jump_host() {
    let _relays = RELAYS.lock().await;
    let jump = Sshd::start();
    let pam = pam_sshd(PAM_PASSWORD);
    let otp = pam_sshd(PAM_OTP);
    let ports = [jump.port, pam.port, otp.port];
    let start = held(&ports);
    let gw = Gateway::start_with(|c| c.auth_prompt_timeout = Duration::from_secs(4)).await;

    // The lone "Password: " round is answered with the session's password: no prompt.
    let mut term = gw.open(&through(&pam, &[&jump]), 80, 24).await;
    term.ready().await;
    assert_peer_is(&pam, &jump);
    exit(term).await;

    // The code is the person's, named as the target's; answered later than the whole
    // connect timeout (of a gateway of its own: PAM takes 2 s to fail a wrong code, more
    // than that timeout), which does not count it.
    let connect_timeout = Duration::from_secs(2);
    let quick = Gateway::start_with(|c| c.connect_timeout = connect_timeout).await;
    let mut term = quick.open(&through(&otp, &[&jump]), 80, 24).await;
    let prompt = expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    assert_eq!(prompt["target"], endpoint(&otp), "{prompt}");
    assert!(prompt.get("hop").is_none(), "{prompt}");
    tokio::time::sleep(connect_timeout + Duration::from_millis(500)).await;
    answer(&mut term, &[&otp_code()]).await;
    let ready = term.ready().await;
    assert_eq!(ready["target"], route(&otp, &[&jump]), "{ready}");
    exit(term).await;
    quick.assert_idle().await;
    quick.stop().await;

    // Interactive everywhere: the hop's password, then the target's password and code.
    let mut body = json!({"hostname": "127.0.0.1", "port": otp.port, "username": TEST_USER,
                          "auth": "interactive"});
    body["jump"] = json!([{"hostname": "127.0.0.1", "port": jump.port,
                           "username": TEST_USER, "auth": "interactive"}]);
    let mut term = gw.open(&body, 80, 24).await;
    let prompt = expect_prompt(&mut term, &[("Password:", false)]).await;
    assert_eq!(
        (&prompt["target"], &prompt["hop"]),
        (&json!(endpoint(&jump)), &json!(1))
    );
    answer(&mut term, &[&test_password()]).await;
    let prompt = expect_prompt(&mut term, &[("Password: ", false)]).await;
    assert_eq!(prompt["target"], endpoint(&otp), "{prompt}");
    answer(&mut term, &[&test_password()]).await;
    expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    answer(&mut term, &[&otp_code()]).await;
    term.ready().await;
    exit(term).await;

    // A wrong code fails the target, not the hop.
    let mut term = gw.open(&through(&otp, &[&jump]), 80, 24).await;
    expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    answer(&mut term, &[&wrong_code()]).await;
    expect_error_at(&mut term, "auth_failed", None).await;

    // Unanswered, behind the hop as before it.
    let mut term = gw.open(&through(&otp, &[&jump]), 80, 24).await;
    expect_prompt(&mut term, &[("Verification code: ", false)]).await;
    let message = expect_error_at(&mut term, "auth_timeout", None).await;
    assert!(message.contains("not answered in time"), "{message}");

    gw.assert_idle().await;
    assert_released(&ports, start).await;
    gw.stop().await;
}

/// Two jump hosts, so the second hop's session itself runs over a relayed channel. Bulk
/// output arrives complete and in order, input reaches the target, and the target's peer
/// is the second hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jump_hosts() {
    let _relays = RELAYS.lock().await;
    let first = Sshd::start();
    let second = Sshd::start();
    let target = Sshd::start();
    let ports = [first.port, second.port, target.port];
    let start = held(&ports);
    let gw = Gateway::start().await;
    let mut term = gw.open(&through(&target, &[&first, &second]), 80, 24).await;
    let ready = term.ready().await;
    assert_eq!(ready["target"], route(&target, &[&first, &second]));
    assert_peer_is(&target, &second);
    // ~1.2 MB through three SSH layers, byte-exact.
    let count = 200_000;
    term.input(&format!("seq 1 {count}; echo done-''marker\r"))
        .await;
    // The echo of the typed line first (its quotes keep it from matching below).
    term.wait_for("done-''marker\r\n").await;
    let out = term.wait_for("\r\ndone-marker").await;
    let expected: String = (1..=count).map(|i| format!("{i}\r\n")).collect();
    assert!(out.ends_with(&format!("{}\r\ndone-marker", count)), "tail");
    let body = &out[..out.len() - "done-marker".len()];
    assert_eq!(body.len(), expected.len(), "byte count");
    assert!(body == expected, "content differs");
    // Typed input crosses the hops too: 48 KiB into `wc -c`, in 64-byte lines (a PTY in
    // canonical mode cuts a line at 4 KiB).
    term.input("stty -echo; wc -c; stty echo\r").await;
    term.input(&format!("{}\r", "x".repeat(63)).repeat(768))
        .await;
    term.input("\u{4}").await;
    term.wait_for(&format!("{}\r\n", 768 * 64)).await;
    term.input("exit\r").await;
    term.expect("ssh-closed").await;
    gw.assert_idle().await;
    assert_released(&ports, start).await;
    gw.stop().await;
}

/// A hop whose host key is not the pinned one gets nothing: the session ends with
/// `host_key_mismatch` at that hop, and its sshd never hears the user name. The same
/// session with the right pin logs in, and then the log does name the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_with_the_wrong_host_key_is_sent_nothing() {
    let _relays = RELAYS.lock().await;
    let jump = Sshd::start_with_config("LogLevel VERBOSE");
    let other = Sshd::start();
    let target = Sshd::start();
    let gw = Gateway::start().await;
    let mut body = through(&target, &[&jump]);
    body["jump"][0]["host_key"] = other.host_key_fingerprint_sha256("ed25519").into();
    let mut term = gw.open(&body, 80, 24).await;
    let message = expect_error_at(&mut term, "host_key_mismatch", Some(1)).await;
    assert!(message.starts_with("jump host 1: "), "{message}");
    let log = jump.log_text();
    assert!(log.contains("Connection from 127.0.0.1"), "{log}");
    assert!(!log.contains(TEST_USER), "the hop heard of the user: {log}");

    // The second hop is checked as the first: over the relay, before its credentials.
    let mut body = through(&target, &[&other, &jump]);
    body["jump"][1]["host_key"] = other.host_key_fingerprint_sha256("ed25519").into();
    let mut term = gw.open(&body, 80, 24).await;
    expect_error_at(&mut term, "host_key_mismatch", Some(2)).await;
    assert!(!jump.log_text().contains(TEST_USER));

    // The target behind a hop too, with no hop named: it is the target.
    let mut body = through(&target, &[&jump]);
    body["jump"][0]["host_key"] = jump.host_key_fingerprint_sha256("ed25519").into();
    body["host_key"] = other.host_key_fingerprint_sha256("ed25519").into();
    let mut term = gw.open(&body, 80, 24).await;
    expect_error_at(&mut term, "host_key_mismatch", None).await;
    assert!(
        jump.log_text()
            .contains(&format!("Accepted password for {TEST_USER}")),
        "with the right pin the hop is logged in to: {}",
        jump.log_text()
    );
    gw.assert_idle().await;
    gw.stop().await;
}

/// Wrong credentials at a hop (first, or behind the first) or at the target: `auth_failed`,
/// naming the hop when it is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_name_the_hop() {
    let _relays = RELAYS.lock().await;
    let first = Sshd::start();
    let second = Sshd::start();
    let target = Sshd::start();
    let gw = Gateway::start().await;
    for (hop, expected) in [(Some(0), Some(1)), (Some(1), Some(2)), (None, None)] {
        let mut body = through(&target, &[&first, &second]);
        match hop {
            Some(i) => body["jump"][i]["password"] = "wrong".into(),
            None => body["password"] = "wrong".into(),
        }
        let mut term = gw.open(&body, 80, 24).await;
        let message = expect_error_at(&mut term, "auth_failed", expected).await;
        assert!(!message.contains(&crate::support::sshd::test_password()));
    }
    // A key that no sshd lists, on the relayed hop.
    let mut body = through(&target, &[&first, &second]);
    body["jump"][1] = crate::support::key_body(&second, &second.keys().unauthorized_ed25519, None);
    let mut term = gw.open(&body, 80, 24).await;
    expect_error_at(&mut term, "auth_failed", Some(2)).await;
    gw.assert_idle().await;
    gw.stop().await;
}

/// A jump host that will not forward (`AllowTcpForwarding no`) ends the session with
/// `forwarding_refused` at that hop; one that cannot reach the next host with
/// `connect_failed` at that hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_that_does_not_forward() {
    let _relays = RELAYS.lock().await;
    let closed = Sshd::start_with_config("AllowTcpForwarding no");
    let jump = Sshd::start();
    let target = Sshd::start();
    let ports = [closed.port, jump.port, target.port];
    let start = held(&ports);
    let gw = Gateway::start().await;
    let mut term = gw.open(&through(&target, &[&closed]), 80, 24).await;
    let message = expect_error_at(&mut term, "forwarding_refused", Some(1)).await;
    assert!(
        message.contains(&format!("127.0.0.1:{}", target.port)),
        "{message}"
    );
    let mut term = gw.open(&through(&target, &[&jump, &closed]), 80, 24).await;
    expect_error_at(&mut term, "forwarding_refused", Some(2)).await;

    let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nothing.local_addr().unwrap().port();
    drop(nothing);
    let mut body = through(&target, &[&jump]);
    body["port"] = port.into();
    let mut term = gw.open(&body, 80, 24).await;
    let message = expect_error_at(&mut term, "connect_failed", Some(1)).await;
    assert!(message.contains(&format!(":{port}")), "{message}");
    gw.assert_idle().await;
    assert_released(&ports, start).await;
    gw.stop().await;
}

/// The destination policy judges every host of the route: the first hop by its addresses,
/// the later ones and the target as given. Refusals, too many hops and loops are answered
/// at create-session, naming the hop, and nothing is left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_routes_are_refused_at_create() {
    let _relays = RELAYS.lock().await;
    let first = Sshd::start();
    let second = Sshd::start();
    let target = Sshd::start();
    let policy = |deny: &[String]| {
        std::sync::Arc::new(alfresco_ssh::destination::DestinationPolicy::parse(&[], deny).unwrap())
    };
    let refused = |res: crate::support::gateway::HttpResponse, code: &str, hop: Option<u64>| {
        assert_eq!(
            res.status,
            if code == "destination_forbidden" {
                403
            } else {
                400
            },
            "{}",
            res.text()
        );
        let error = &res.json()["error"];
        assert_eq!(error["code"], code, "{error}");
        assert_eq!(error["hop"].as_u64(), hop, "{error}");
    };
    for (denied, hop) in [(&first, Some(1)), (&second, Some(2)), (&target, None)] {
        let rule = format!("127.0.0.1:{}", denied.port);
        let gw = Gateway::start_with(|c| c.destinations = policy(&[rule])).await;
        let res = gw.create(&through(&target, &[&first, &second])).await;
        refused(res, "destination_forbidden", hop);
        assert_eq!(gw.handle.pending(), 0);
        gw.stop().await;
    }
    // A name beyond the first hop is judged as given: the gateway does not resolve it.
    let gw = Gateway::start_with(|c| c.destinations = policy(&["db.internal".into()])).await;
    let mut body = through(&target, &[&first]);
    body["hostname"] = "DB.internal".into();
    refused(gw.create(&body).await, "destination_forbidden", None);
    body["hostname"] = "other.internal".into();
    body["jump"][0]["hostname"] = "127.0.0.1".into();
    let res = gw.create(&body).await;
    assert_eq!(
        res.status, 201,
        "an unresolvable name beyond a hop is the hop's to resolve"
    );

    let four: Vec<Value> = [&first, &second, &target, &first]
        .iter()
        .map(|s| password_body(s))
        .collect();
    let mut body = password_body(&target);
    body["jump"] = four.into();
    refused(gw.create(&body).await, "too_many_hops", None);
    refused(
        gw.create(&through(&target, &[&first, &target])).await,
        "jump_loop",
        Some(2),
    );
    refused(
        gw.create(&through(&target, &[&first, &first])).await,
        "jump_loop",
        Some(2),
    );
    let mut body = through(&target, &[&first]);
    body["jump"][0]["port"] = json!(0);
    refused(gw.create(&body).await, "invalid_field", Some(1));
    body["jump"][0] = json!({"hostname": "127.0.0.1", "username": TEST_USER});
    refused(gw.create(&body).await, "missing_field", Some(1));
    assert_eq!(gw.handle.pending(), 1, "only the good one");
    gw.stop().await;
}

/// A session through a jump host survives its socket: a resume on a new socket gets the
/// shell back, and the exit status still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_through_a_jump_host() {
    let _relays = RELAYS.lock().await;
    let jump = Sshd::start();
    let target = Sshd::start();
    let gw = Gateway::start_with(|c| c.resume_grace = Some(Duration::from_secs(30))).await;
    let mut term = gw.open(&through(&target, &[&jump]), 80, 24).await;
    let ready = term.ready().await;
    let token = ready["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_owned();
    assert_eq!(term.run("echo before").await, "before\r\n");
    let offset = term.output.len();
    term.vanish();
    let mut again = gw.ws().await;
    again
        .send_event(
            "resume-session",
            json!({"token": token, "offset": offset, "cols": 80, "rows": 24}),
        )
        .await;
    let resumed = again.expect("session-resumed").await;
    assert_eq!(resumed["target"], route(&target, &[&jump]));
    assert_eq!(again.run("echo after").await, "after\r\n");
    again.input("exit 7\r").await;
    assert_eq!(again.expect("ssh-closed").await["exit_status"], 7);
    gw.assert_idle().await;
    gw.stop().await;
}
