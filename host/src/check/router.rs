//! The router contract and the author's expectations.
//!
//! `wit/router.wit` leaves every decision to the router: any name may be
//! allowed or refused, and `route-publish` may return any list of targets.
//! What it promises is a typed answer to every question: an `ok` or a
//! `route-error`, never a trap or a spent time budget, whatever the claims
//! and however odd the name. The author's expectations then pin down the
//! policy itself.

use super::inputs::{Expectations, RouteOutcome, TargetKey, TokenInputs};
use super::{APP, Report, expect, hostile_names, route_error};
use crate::plugins::RouterPlugin;
use crate::plugins::bindings::{Claims, RouteError, RouteTarget};

/// The event of the contract's publishes.
const EVENT: &str = "message";

pub async fn contract(
    report: &mut Report,
    router: &RouterPlugin,
    inputs: &TokenInputs,
    expectations: &Expectations,
) {
    report.note(&format!(
        "contract: claims of a token with {}",
        inputs.describe()
    ));
    let claims = [
        ("the request's claims", inputs.claims()),
        ("claims with nothing granted", nothing_granted()),
    ];
    let names = names_to_try(inputs, expectations);

    let mut failed = Vec::new();
    for (whose, claims) in &claims {
        for (label, channel) in &names {
            let answer = router.authorize_subscribe(APP, claims, channel).await;
            if let Err(failure) = answer {
                failed.push(format!("{label} with {whose}: {}", failure.reason));
            }
        }
    }
    report.check(
        "authorize-subscribe answers every channel name (ok or route-error)",
        all_answered(failed),
    );

    let mut failed = Vec::new();
    let events = hostile_events();
    for (whose, claims) in &claims {
        let questions =
            names
                .iter()
                .map(|(label, channel)| (format!("channel {label}"), channel.as_str(), EVENT))
                .chain(events.iter().map(|(label, event)| {
                    (format!("event {label}"), "plugin-check", event.as_str())
                }));
        for (label, channel, event) in questions {
            let answer = router.authorize_publish(APP, claims, channel, event).await;
            if let Err(failure) = answer {
                failed.push(format!("{label} with {whose}: {}", failure.reason));
            }
        }
    }
    report.check(
        "authorize-publish answers every channel and event (ok or route-error)",
        all_answered(failed),
    );

    let mut failed = Vec::new();
    let mut targets: Vec<(String, RouteTarget, &str)> = Vec::new();
    for (label, name) in &names {
        for (kind, target) in [
            ("channel", RouteTarget::Channel(name.clone())),
            ("user", RouteTarget::User(name.clone())),
            ("token", RouteTarget::Token(name.clone())),
        ] {
            targets.push((format!("{kind} {label}"), target, EVENT));
        }
    }
    for (label, event) in &events {
        let target = RouteTarget::Channel("plugin-check".into());
        targets.push((format!("event {label}"), target, event));
    }
    for (label, target, event) in &targets {
        if let Err(failure) = router.route_publish(APP, target, event).await {
            failed.push(format!("{label}: {}", failure.reason));
        }
    }
    report.check(
        "route-publish answers every target and event (a list or route-error)",
        all_answered(failed),
    );
}

/// The author's expectations, each its own check.
pub async fn expectations(
    report: &mut Report,
    router: &RouterPlugin,
    inputs: &TokenInputs,
    expectations: &Expectations,
) {
    report.note(&format!(
        "expectations (check file): claims of a token with {}",
        inputs.describe()
    ));
    let claims = inputs.claims();
    for channel in &expectations.subscribe.allowed {
        report.check(
            &format!("subscribe to {channel:?} is allowed"),
            expect(
                router.authorize_subscribe(APP, &claims, channel).await,
                Result::is_ok,
                "ok",
                show_unit,
            ),
        );
    }
    for channel in &expectations.subscribe.forbidden {
        report.check(
            &format!("subscribe to {channel:?} is forbidden"),
            expect(
                router.authorize_subscribe(APP, &claims, channel).await,
                |answer| matches!(answer, Err(RouteError::Forbidden(_))),
                "forbidden",
                show_unit,
            ),
        );
    }
    let event = &expectations.client_event;
    for channel in &expectations.client_publish.allowed {
        report.check(
            &format!("client publish of {event:?} to {channel:?} is allowed"),
            expect(
                router.authorize_publish(APP, &claims, channel, event).await,
                Result::is_ok,
                "ok",
                |answer| match answer {
                    Ok(_) => "ok".into(),
                    Err(error) => route_error(error),
                },
            ),
        );
    }
    for channel in &expectations.client_publish.forbidden {
        report.check(
            &format!("client publish of {event:?} to {channel:?} is forbidden"),
            expect(
                router.authorize_publish(APP, &claims, channel, event).await,
                |answer| matches!(answer, Err(RouteError::Forbidden(_))),
                "forbidden",
                |answer| match answer {
                    Ok(publication) => format!(
                        "ok (as {:?} to {:?})",
                        publication.event, publication.channel
                    ),
                    Err(error) => route_error(error),
                },
            ),
        );
    }
    for route in &expectations.route_publish {
        let target = TargetKey::of(&route.target);
        let answer = router.route_publish(APP, &route.target, &route.event).await;
        let show = |answer: &Result<Vec<RouteTarget>, RouteError>| match answer {
            Ok(targets) => list(targets.iter().map(TargetKey::of)),
            Err(error) => route_error(error),
        };
        match &route.outcome {
            RouteOutcome::Reaches(wanted) => report.check(
                &format!(
                    "an app publish to {target} reaches {}",
                    list(wanted.iter().cloned())
                ),
                expect(
                    answer,
                    |answer| {
                        answer.as_ref().is_ok_and(|targets| {
                            targets
                                .iter()
                                .map(TargetKey::of)
                                .collect::<std::collections::BTreeSet<_>>()
                                == *wanted
                        })
                    },
                    "those targets",
                    show,
                ),
            ),
            RouteOutcome::Refused => report.check(
                &format!("an app publish to {target} is refused"),
                expect(answer, Result::is_err, "a route-error", show),
            ),
        }
    }
}

/// Channel (and target) names to ask about: the author's, samples of the
/// token's globs, and hostile ones.
fn names_to_try(inputs: &TokenInputs, expectations: &Expectations) -> Vec<(String, String)> {
    let mut plain: Vec<String> = vec!["plugin-check".into()];
    plain.extend(inputs.user_id.iter().cloned());
    let samples = inputs
        .channels
        .iter()
        .chain(&inputs.publish)
        .map(|glob| glob.replace('*', "x"));
    plain.extend(samples);
    plain.extend(
        expectations
            .subscribe
            .allowed
            .iter()
            .chain(&expectations.subscribe.forbidden)
            .chain(&expectations.client_publish.allowed)
            .chain(&expectations.client_publish.forbidden)
            .cloned(),
    );
    plain.sort();
    plain.dedup();
    let mut names: Vec<(String, String)> = plain
        .into_iter()
        .map(|name| (format!("{name:?}"), name))
        .collect();
    names.extend(
        hostile_names()
            .into_iter()
            .map(|(label, name)| (format!("({label})"), name)),
    );
    names
}

fn hostile_events() -> Vec<(String, String)> {
    hostile_names()
        .into_iter()
        .map(|(label, name)| (format!("({label})"), name))
        .collect()
}

/// A token with no user and no globs, idle for the shortest time allowed.
fn nothing_granted() -> Claims {
    Claims {
        access_id: "plugin-check-empty".into(),
        user_id: None,
        channels: Vec::new(),
        publish: Vec::new(),
        idle_timeout_secs: 1,
    }
}

fn all_answered(failed: Vec<String>) -> Result<(), String> {
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("no answer for {}", failed.join("; ")))
    }
}

fn show_unit(answer: &Result<(), RouteError>) -> String {
    match answer {
        Ok(()) => "ok".into(),
        Err(error) => route_error(error),
    }
}

fn list(targets: impl Iterator<Item = TargetKey>) -> String {
    let shown: Vec<String> = targets.map(|target| target.to_string()).collect();
    format!("[{}]", shown.join(", "))
}
