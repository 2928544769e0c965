//! The live attendance page in a real headless Chromium: who is present in the current meeting
//! and their minutes, updated live from the presence stream as webhooks arrive; the room's
//! meetings, each with its CSV.

mod common;

use std::time::Duration;

use common::System;
use serde_json::Value;
use testkit::browser::Browser;
use testkit::livekit::{
    admin_token, participant_joined, participant_joined_at, participant_left, participant_token, sign_now,
};

const ROW_STATE: &str = "return Array.from(document.querySelectorAll('#participants li'))
    .map(li => li.dataset.identity + '=' + li.dataset.present).join(',')";

async fn wait_for(browser: &Browser, script: &str, expected: &str) {
    testkit::eventually(Duration::from_secs(10), &format!("the page to show {expected}"), || async {
        (browser.eval(script).await == Value::String(expected.into())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_who_is_present_and_follows_joins_and_leaves() {
    let system = System::start().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}#{}", system.url("/rooms/algebra%20101"), admin_token("algebra 101"))).await;
    wait_for(&browser, "return document.getElementById('status').dataset.state", "live").await;
    assert_eq!(browser.eval("return document.getElementById('room').textContent").await, "algebra 101");
    assert_eq!(browser.eval("return location.hash").await, "", "the token leaves the address bar");

    // Joined three minutes ago (LiveKit's joinedAt), reported now.
    let joined_at = shared::domain::time::now_unix_ms() / 1000 - 180;
    let joined = participant_joined_at("EV_page_1", "algebra 101", "ada", joined_at);
    assert_eq!(system.gateway.post_webhook(joined.clone(), Some(&sign_now(&joined))).await.status(), 200);
    wait_for(&browser, ROW_STATE, "ada=true").await;
    let minutes = browser.eval("return document.querySelector('[data-identity=ada] .minutes').textContent").await;
    assert_eq!(minutes, "3 min", "open cycles count up to now");
    assert_eq!(browser.eval("return document.getElementById('summary').textContent").await, "1 present of 1");
    // The room's meetings: this one, running, and its CSV saved through fetch (the token stays in
    // a header, never in a URL).
    wait_for(
        &browser,
        "return Array.from(document.querySelectorAll('#meeting-list li')).map(li => li.dataset.roomSid + '=' + li.dataset.state).join(',')",
        "RM_algebra 101=running",
    )
    .await;
    browser.eval("document.querySelector('#meeting-list li button').click(); return true").await;
    wait_for(
        &browser,
        "return Number(document.querySelector('#meeting-list li').dataset.downloaded) > 100 ? 'saved' : 'not yet'",
        "saved",
    )
    .await;
    let screenshot = std::env::temp_dir().join("live-page.png");
    browser.screenshot(&screenshot).await;
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1_000, "a rendered page");

    let left = participant_left("EV_page_2", "algebra 101", "ada", joined_at);
    assert_eq!(system.gateway.post_webhook(left.clone(), Some(&sign_now(&left))).await.status(), 200);
    wait_for(&browser, ROW_STATE, "ada=false").await;
    wait_for(&browser, "return document.querySelector('[data-identity=ada] .minutes').textContent", "3 min").await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_sees_only_its_own_row_and_a_bad_token_is_reported() {
    let system = System::start().await;
    for (event_id, identity) in [("EV_own_1", "ada"), ("EV_own_2", "bob")] {
        let joined = participant_joined(event_id, "algebra", identity);
        assert_eq!(system.gateway.post_webhook(joined.clone(), Some(&sign_now(&joined))).await.status(), 200);
    }
    let browser = Browser::start().await;
    browser.goto(&format!("{}#{}", system.url("/rooms/algebra"), participant_token("bob", "algebra"))).await;
    wait_for(&browser, ROW_STATE, "bob=true").await;

    browser.goto("about:blank").await;
    browser.goto(&format!("{}#not-a-token", system.url("/rooms/algebra"))).await;
    wait_for(&browser, "return document.getElementById('status').dataset.state", "error").await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_link_opens_the_page_survives_a_reload_and_says_when_it_expired() {
    let system = System::start().await;
    testkit::eventually(Duration::from_secs(30), "the database to be migrated", || async {
        (system.get("/v1/rooms/algebra/meetings", Some(&admin_token("algebra"))).await.status() == 200).then_some(())
    })
    .await;
    // The browser first: the link's few seconds are for the page, not for starting Chromium.
    let browser = Browser::start().await;
    // A link that lives a few seconds: made by the room's admin, as a platform's backend would.
    let link: Value = system
        .gateway
        .http
        .post(system.url("/v1/rooms/algebra/view-links?ttl=15s"))
        .bearer_auth(admin_token("algebra"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    browser.goto(&system.url(link["url"].as_str().unwrap())).await;
    wait_for(&browser, "return document.getElementById('status').dataset.state", "live").await;
    assert_eq!(browser.eval("return location.hash").await, "", "the token leaves the address bar");
    // A reload (the address bar holds no token any more) keeps working.
    browser.eval("location.reload(); return true").await;
    wait_for(&browser, "return document.getElementById('status').dataset.state", "live").await;
    // Past its expiry the stream ends and the page says so, instead of reconnecting for ever.
    testkit::eventually(Duration::from_secs(60), "the page to say the link expired", || async {
        (browser.eval("return document.getElementById('status').dataset.state").await
            == Value::String("expired".into()))
        .then_some(())
    })
    .await;
    let text = browser.eval("return document.getElementById('status').textContent").await;
    assert!(text.as_str().is_some_and(|t| t.contains("expired")), "{text}");
    system.stop().await;
}
