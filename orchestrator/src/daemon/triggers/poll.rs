//! Polling CloudStack's `listEvents` and `listAlerts`: for zones before 4.20 (no webhooks), and
//! to catch up on deliveries that were lost.
//!
//! Each poller keeps a cursor in the daemon's state (so a restart or a failover goes on where
//! the last leader stopped): the newest `created` time seen and the ids seen at that time. A
//! poll asks for what happened since (`startdate`, the cursor's day and time), and passes on the
//! items newer than the cursor, oldest first. The first poll of a new cursor only sets it, to the
//! newest item (or now): the history before the daemon existed is not acted on. Events polled
//! go through the same replay check as webhook deliveries, so an event both delivered and
//! polled runs once.
//!
//! Not here: which API (the poller's inventory, through the daemon's API connections), matching.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Event, Origin};

pub use crate::daemon::state::Cursor;

/// CloudStack's time format in list replies (`2026-12-06T10:00:00+0000`).
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%z", s)
        .ok()
        .or_else(|| s.parse().ok())
}

/// An item of `listEvents` as an event.
pub fn from_event(item: &Value) -> Event {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Event {
        source: Origin::Cloudstack.word().into(),
        kind: "event".into(),
        id: text("id"),
        kind_name: text("type"),
        level: text("level"),
        status: text("state"),
        resource_type: text("resourcetype"),
        resource_id: text("resourceid"),
        resource_name: text("resourcename"),
        description: text("description"),
        account: text("account"),
        created: text("created"),
        payload: item.clone(),
        ..Event::default()
    }
}

/// An item of `listAlerts` as an event (its `name`, e.g. `ALERT.NETWORK.DOMAINROUTER`, is the
/// type; its `sent` time the creation).
pub fn from_alert(item: &Value) -> Event {
    let text = |k: &str| match item.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Event {
        source: Origin::Cloudstack.word().into(),
        kind: "alert".into(),
        id: text("id"),
        kind_name: text("name"),
        level: String::new(),
        status: String::new(),
        description: text("description"),
        created: text("sent"),
        payload: item.clone(),
        ..Event::default()
    }
}

/// The items of a list reply (`{"count": N, "event": [...]}`), whatever their key.
pub fn items(reply: &Value) -> Vec<Value> {
    reply
        .as_object()
        .and_then(|o| o.iter().find_map(|(_, v)| v.as_array().cloned()))
        .unwrap_or_default()
}

/// The events newer than `cursor` among `polled`, oldest first, and the cursor after them. A
/// fresh cursor (`None` time) takes the newest item, or `now`, and passes nothing on.
pub fn advance(cursor: &Cursor, polled: Vec<Event>, now: jiff::Timestamp) -> (Vec<Event>, Cursor) {
    let mut timed: Vec<(jiff::Timestamp, Event)> = polled
        .into_iter()
        .filter_map(|e| parse_time(&e.created).map(|t| (t, e)))
        .collect();
    timed.sort_by_key(|(t, _)| *t);
    let Some(from) = cursor.created else {
        // (Now to the second, as CloudStack writes times: an event later in this second is new.)
        let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        let newest = timed.last().map(|(t, _)| *t).unwrap_or(now);
        let ids = timed
            .iter()
            .filter(|(t, _)| *t == newest)
            .map(|(_, e)| e.id.clone())
            .collect();
        return (
            Vec::new(),
            Cursor {
                created: Some(newest),
                ids,
            },
        );
    };
    let mut next = cursor.clone();
    let mut out = Vec::new();
    for (t, e) in timed {
        let new = t > from || (t == from && !cursor.ids.contains(&e.id));
        if !new {
            continue;
        }
        if next.created != Some(t) {
            next.created = Some(t);
            next.ids.clear();
        }
        next.ids.push(e.id.clone());
        out.push(e);
    }
    (out, next)
}

/// The `startdate` argument for a cursor: CloudStack reads `yyyy-MM-dd HH:mm:ss`.
pub fn startdate(cursor: &Cursor) -> Option<String> {
    cursor
        .created
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

/// The cursors of every poller and source, keyed `NAME/events` and `NAME/alerts`.
pub type Cursors = BTreeMap<String, Cursor>;

/// Polls `p` every interval until the task is dropped (the term of leadership ends). A failed
/// poll is logged and tried again at the next interval.
pub async fn run(
    env: std::sync::Arc<crate::daemon::run::Env>,
    p: super::Poll,
    tx: tokio::sync::mpsc::Sender<super::Arrived>,
    metrics: std::sync::Arc<crate::daemon::observe::Metrics>,
) {
    loop {
        if let Err(e) = once(&env, &p, &tx, &metrics).await {
            tracing::warn!(poller = %p.name, error = %e, "polling CloudStack failed; trying again at the next interval");
        }
        tokio::time::sleep(p.every).await;
    }
}

/// One poll of every source of `p`.
async fn once(
    env: &crate::daemon::run::Env,
    p: &super::Poll,
    tx: &tokio::sync::mpsc::Sender<super::Arrived>,
    metrics: &crate::daemon::observe::Metrics,
) -> Result<(), String> {
    use crate::transport::{Access, Action, ActionResult, ApiCall};
    let files = crate::inventory::Inventory::load(&p.inventory).map_err(|e| e.to_string())?;
    let api = env.api(&p.inventory, &files);
    type Convert = fn(&Value) -> Event;
    let sources: [(bool, &str, &str, Convert); 2] = [
        (p.events, "listEvents", "events", from_event),
        (p.alerts, "listAlerts", "alerts", from_alert),
    ];
    for (on, command, what, convert) in sources {
        if !on {
            continue;
        }
        let key = format!("{}/{what}", p.name);
        let cursor = env
            .store
            .load()
            .await?
            .events
            .cursors
            .get(&key)
            .cloned()
            .unwrap_or_default();
        let mut args = BTreeMap::new();
        args.insert("listall".to_string(), "true".to_string());
        if command == "listEvents" {
            if let Some(d) = startdate(&cursor) {
                args.insert("startdate".to_string(), d);
            }
        }
        let call = Action::Api(ApiCall {
            command: command.to_string(),
            args,
        });
        let reply = api
            .run(&call, Access::ReadOnly, std::time::Duration::from_secs(30))
            .await
            .map_err(|e| format!("{command}: {e}"))?;
        let ActionResult::Api(reply) = reply else {
            return Err(format!("{command}: not an API reply"));
        };
        let polled = items(&reply).iter().map(convert).collect();
        let (new, next) = advance(&cursor, polled, jiff::Timestamp::now());
        for event in new {
            metrics.event_received(Origin::Cloudstack);
            if !super::hooks::remember(&env.store, &event).await? {
                metrics.event_deduplicated(Origin::Cloudstack, "replay");
                continue;
            }
            let arrived = super::Arrived {
                event,
                at: std::time::Instant::now(),
                origin: Origin::Cloudstack,
            };
            if tx.send(arrived).await.is_err() {
                return Ok(());
            }
        }
        if next != cursor {
            env.store
                .update(|s| {
                    s.events.cursors.insert(key.clone(), next.clone());
                })
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, created: &str) -> Event {
        from_event(
            &serde_json::json!({"id": id, "type": "ROUTER.HEALTH.CHECKS", "created": created}),
        )
    }

    #[test]
    fn a_fresh_cursor_starts_at_the_newest_and_acts_on_nothing() {
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        let (out, c) = advance(
            &Cursor::default(),
            vec![
                ev("a", "2026-12-06T10:00:00+0000"),
                ev("b", "2026-12-06T11:00:00+0000"),
            ],
            now,
        );
        assert!(out.is_empty());
        assert_eq!(c.created, Some("2026-12-06T11:00:00Z".parse().unwrap()));
        assert_eq!(c.ids, ["b"]);
        let (_, empty) = advance(&Cursor::default(), Vec::new(), now);
        assert_eq!(empty.created, Some(now));
    }

    #[test]
    fn only_newer_items_pass_oldest_first_and_same_second_ids_are_kept() {
        let c = Cursor {
            created: Some("2026-12-06T11:00:00Z".parse().unwrap()),
            ids: vec!["b".into()],
        };
        let (out, next) = advance(
            &c,
            vec![
                ev("d", "2026-12-06T11:00:05+0000"),
                ev("b", "2026-12-06T11:00:00+0000"),
                ev("c", "2026-12-06T11:00:00+0000"),
                ev("a", "2026-12-06T10:00:00+0000"),
            ],
            jiff::Timestamp::now(),
        );
        let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["c", "d"]);
        assert_eq!(next.ids, ["d"]);
        let (again, _) = advance(
            &next,
            vec![ev("d", "2026-12-06T11:00:05+0000")],
            jiff::Timestamp::now(),
        );
        assert!(again.is_empty(), "nothing twice");
        assert_eq!(startdate(&next).as_deref(), Some("2026-12-06 11:00:05"));
    }
}
