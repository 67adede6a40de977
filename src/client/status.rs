//! The gateway's status object (`GET /sessions/<id>`), parsed into the few fields the
//! client acts on, and the `wait=` lists it asks for. Pure: no IO.
//!
//! Fields the client does not know are ignored, so a newer gateway's answers still parse;
//! an unknown state is kept as `Unknown` and treated as not final.

use serde::Deserialize;

/// A session's state, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Connecting,
    Live,
    Detached,
    Ended,
    Expired,
    Revoked,
    Failed,
    #[serde(other)]
    Unknown,
}

impl State {
    /// The states a `wait=` list can name (not `Unknown`).
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Connecting,
        State::Live,
        State::Detached,
        State::Ended,
        State::Expired,
        State::Revoked,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Connecting => "connecting",
            State::Live => "live",
            State::Detached => "detached",
            State::Ended => "ended",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Failed => "failed",
            State::Unknown => "unknown",
        }
    }

    /// A session in a final state never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Ended | State::Expired | State::Revoked | State::Failed
        )
    }

    /// One state, or a shorthand of the contract (`opened`: every state but `pending`;
    /// `ended`: every final state), as `wait --for` takes them.
    pub fn parse_list(list: &str) -> Result<Vec<State>, String> {
        let mut states: Vec<State> = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let named: Vec<State> = match word {
                "opened" => State::ALL
                    .into_iter()
                    .filter(|s| *s != State::Pending)
                    .collect(),
                "ended" => State::ALL.into_iter().filter(|s| s.is_final()).collect(),
                _ => vec![
                    State::ALL
                        .into_iter()
                        .find(|s| s.name() == word)
                        .ok_or_else(|| format!("unknown state {word:?}"))?,
                ],
            };
            for state in named {
                if !states.contains(&state) {
                    states.push(state);
                }
            }
        }
        if states.is_empty() {
            return Err("no state named".into());
        }
        Ok(states)
    }

    /// The `wait=` list that answers at the next change from `current`: every other state.
    pub fn all_but(current: State) -> String {
        let others: Vec<&str> = State::ALL
            .iter()
            .filter(|s| **s != current)
            .map(|s| s.name())
            .collect();
        others.join(",")
    }
}

/// The parts of a status object the client reads; `raw` keeps the whole answer for `--json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub id: String,
    pub state: State,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub end_reason: Option<String>,
    #[serde(default)]
    pub end_message: Option<String>,
    #[serde(default)]
    pub exit_status: Option<i64>,
    #[serde(default)]
    pub exit_signal: Option<String>,
    #[serde(default)]
    pub handback: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Only on wait answers: the timeout passed with no change.
    #[serde(default)]
    pub timed_out: bool,
    /// Only on wait answers: the gateway is draining (answered at once).
    #[serde(default)]
    pub draining: bool,
}

impl Status {
    /// A status in `state` with nothing else set, for tests.
    #[cfg(test)]
    pub fn test(state: &str) -> Status {
        serde_json::from_value(serde_json::json!({"id": "00000000-test", "state": state}))
            .expect("a test status")
    }

    /// How the session ended, in a few words: `exited 7`, `signalled TERM`,
    /// `handback continue`, `idle_timeout`.
    pub fn outcome(&self) -> String {
        match (self.end_reason.as_deref(), self.handback.as_deref()) {
            (_, Some(verdict)) => format!("handback {verdict}"),
            (Some("exited"), _) => match self.exit_status {
                Some(n) => format!("exited {n}"),
                None => "exited".into(),
            },
            (Some("signalled"), _) => match &self.exit_signal {
                Some(name) => format!("signalled {name}"),
                None => "signalled".into(),
            },
            (Some(reason), _) => match &self.end_message {
                Some(message) if !message.is_empty() => format!("{reason} ({message})"),
                _ => reason.to_owned(),
            },
            (None, None) => "no reason given".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example_and_ignores_new_fields() {
        let s: Status = serde_json::from_str(
            r#"{"id":"x","state":"ended","target":"u@h:22","token":"ci",
                "end_reason":"exited","exit_status":7,"exit_signal":null,"attached":false,
                "client":"127.0.0.1","viewers":0,"handback":null,"future_field":[1]}"#,
        )
        .unwrap();
        assert_eq!(s.state, State::Ended);
        assert_eq!(s.exit_status, Some(7));
        assert_eq!(s.outcome(), "exited 7");
        let s: Status = serde_json::from_str(r#"{"id":"x","state":"hibernating"}"#).unwrap();
        assert_eq!(s.state, State::Unknown);
        assert!(!s.state.is_final());
    }

    #[test]
    fn wait_lists() {
        assert_eq!(
            State::parse_list("opened").unwrap(),
            State::ALL[1..].to_vec()
        );
        assert_eq!(
            State::parse_list("live, ended").unwrap(),
            [
                State::Live,
                State::Ended,
                State::Expired,
                State::Revoked,
                State::Failed
            ]
        );
        assert!(State::parse_list("live,sleeping").is_err());
        assert!(State::parse_list(" , ").is_err());
        assert_eq!(
            State::all_but(State::Pending),
            "connecting,live,detached,ended,expired,revoked,failed"
        );
    }
}
