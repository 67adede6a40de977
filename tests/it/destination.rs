//! The destination policy against a real loopback-only sshd: addresses that reach the
//! gateway's own host by another spelling, and names that resolve to guarded addresses,
//! are refused however the rules are written.

use std::sync::Arc;

use alfresco_ssh::destination::DestinationPolicy;

use crate::support::gateway::Gateway;
use crate::support::password_body;
use crate::support::sshd::Sshd;

fn policy(allow: &[&str], deny: &[&str]) -> Arc<DestinationPolicy> {
    let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Arc::new(DestinationPolicy::parse(&own(allow), &own(deny)).unwrap())
}

/// `0.0.0.0` and `::` connect to the local host on Linux, so before the fix they opened a
/// shell past `--deny 127.0.0.0/8 --deny ::1`; now no rule admits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspecified_addresses_do_not_reach_loopback() {
    let sshd = Sshd::start();
    for (allow, deny) in [
        (&[][..], &["127.0.0.0/8", "::1"][..]),
        (&["0.0.0.0/0", "::/0"][..], &["127.0.0.0/8", "::1"][..]),
        (&[][..], &[][..]),
    ] {
        let gw = Gateway::start_with(|c| c.destinations = policy(allow, deny)).await;
        for host in [
            "0.0.0.0",
            "::",
            "::ffff:0.0.0.0",
            "[::]",
            "0.0.0.1",
            "64:ff9b::",
        ] {
            let mut body = password_body(&sshd);
            body["hostname"] = host.into();
            let res = gw.create(&body).await;
            assert_eq!(
                (res.status, res.error_code().as_str()),
                (403, "destination_forbidden"),
                "{host} with --allow {allow:?} --deny {deny:?}: {}",
                res.text()
            );
        }
        assert_eq!(gw.handle.pending(), 0);
        gw.stop().await;
    }
}

/// A name rule does not admit the loopback or metadata address a name resolves to:
/// `localhost` resolves (through /etc/hosts, no query leaves the machine) to 127.0.0.1.
/// Before the fix `--allow localhost` opened a shell there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_rules_do_not_admit_guarded_addresses() {
    let sshd = Sshd::start();
    let port = sshd.addr().port();
    let mut by_name = password_body(&sshd);
    by_name["hostname"] = "localhost".into();

    for allow in [
        vec!["localhost".to_owned()],
        vec![format!("localhost:{port}")],
        vec!["*.example".to_owned(), "localhost".to_owned()],
    ] {
        let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
        let gw = Gateway::start_with(|c| c.destinations = policy(&allow, &[])).await;
        let res = gw.create(&by_name).await;
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (403, "destination_forbidden"),
            "--allow {allow:?}: {}",
            res.text()
        );
        assert!(res.text().contains("loopback"), "{}", res.text());
        gw.stop().await;
    }

    // An address rule beside the name rule admits it: the operator said so by address.
    let gw = Gateway::start_with(|c| {
        c.destinations = policy(&["localhost", "127.0.0.0/8", "::1"], &[]);
    })
    .await;
    let mut term = gw.open(&by_name, 80, 24).await;
    term.ready().await;
    term.close().await;
    gw.assert_idle().await;
    gw.stop().await;
}
