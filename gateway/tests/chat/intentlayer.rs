//! Seed 000 over real sockets: the documented examples, errors, limits, expiry and audio.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::common::*;

async fn post(server: &voxgate::testing::TestServer, path: &str, body: Value) -> (u16, Value) {
    json_response(
        client()
            .post(server.http_url(path))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn get(server: &voxgate::testing::TestServer, path: &str) -> (u16, Value) {
    json_response(client().get(server.http_url(path)).send().await.unwrap()).await
}

/// The seed's create example.
async fn create(server: &voxgate::testing::TestServer, user: &str, language: &str) -> Value {
    let (status, body) = post(
        server,
        "/api/v1/sessions/create",
        json!({
            "user_id": user,
            "user_data": {"name": "John Doe", "preferences": {"language": language, "theme": "dark"}},
            "context": {"platform": "nextjs", "version": "1.0"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn chat(server: &voxgate::testing::TestServer, session_id: &str, message: &str) -> Value {
    let (status, body) = post(
        server,
        "/api/v1/sessions/chat",
        json!({
            "session_id": session_id,
            "message": message,
            "input_type": "text",
            "context": {"page": "/contact", "timestamp": "2024-01-15T10:35:00Z"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn session_id(created: &Value) -> String {
    created["session_info"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Component types at the top level of `ui_components`.
fn kinds(response: &Value) -> Vec<String> {
    response["ui_components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn seed_create_and_chat_examples() {
    let server = start(|_| {}).await;
    let created = create(&server, "user123", "fr").await;
    assert_eq!(keys(&created), ["message", "session_info", "success"]);
    assert_eq!(created["success"], true);
    assert_eq!(created["message"], "Session créée avec succès");
    let info = &created["session_info"];
    assert_eq!(
        keys(info),
        [
            "created_at",
            "expires_at",
            "interaction_count",
            "is_active",
            "last_activity",
            "session_id",
            "user_id"
        ]
    );
    assert!(info["session_id"].as_str().unwrap().starts_with("sess_"));
    assert_eq!(info["user_id"], "user123");
    assert!(is_timestamp(&info["created_at"]) && is_timestamp(&info["last_activity"]));
    assert_eq!(info["interaction_count"], 0);
    assert_eq!(info["is_active"], true);
    let id = session_id(&created);

    let response = chat(&server, &id, "Créer un formulaire de contact").await;
    assert_eq!(
        keys(&response),
        [
            "message_id",
            "nlp_analysis",
            "response_audio",
            "response_id",
            "response_text",
            "session_info",
            "success",
            "ui_components"
        ]
    );
    assert_eq!(response["success"], true);
    assert_eq!(response["nlp_analysis"]["intent"], "create_form");
    assert_eq!(
        response["nlp_analysis"]["entities"],
        json!([{"type": "form_type", "value": "contact"}])
    );
    let confidence = response["nlp_analysis"]["confidence"].as_f64().unwrap();
    assert!(confidence > 0.8 && confidence <= 1.0, "{confidence}");
    assert_eq!(kinds(&response), ["form"]);
    let fields = &response["ui_components"][0]["props"]["fields"];
    let field_shapes: Vec<(&str, &str, &str)> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["type"].as_str().unwrap(),
                f["label"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        field_shapes,
        [
            ("name", "text", "Nom"),
            ("email", "email", "Email"),
            ("message", "textarea", "Message")
        ]
    );
    assert_eq!(
        response["response_text"],
        "J'ai créé un formulaire de contact avec les champs nom, email et message."
    );
    assert_eq!(
        keys(&response["session_info"]),
        ["interaction_count", "last_activity", "session_id"]
    );
    assert_eq!(response["session_info"]["session_id"], id.as_str());
    assert_eq!(response["session_info"]["interaction_count"], 1);
    assert!(is_timestamp(&response["session_info"]["last_activity"]));

    // The audio URL has the seed's form and serves the answer, spoken.
    let audio = response["response_audio"].as_str().unwrap();
    assert!(
        audio.starts_with("/audio/response_") && audio.ends_with(".wav"),
        "{audio}"
    );
    let wav = client().get(server.http_url(audio)).send().await.unwrap();
    assert_eq!(wav.status().as_u16(), 200);
    assert_eq!(wav.headers()["content-type"], "audio/wav");
    let bytes = wav.bytes().await.unwrap();
    assert_spoken(
        &bytes,
        "J'ai créé un formulaire de contact avec les champs nom, email et message.",
        "fr",
    );

    // The interaction is stored through the chat domain.
    let store = server.state.chat.store();
    let question = store
        .get_message(response["message_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(question.content, "Créer un formulaire de contact");
    let answer = store
        .get_message(response["response_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.content, response["response_text"].as_str().unwrap());
    assert_eq!(answer.metadata["intent"], "create_form");
    // Built inside the turn's transaction from the touched session: the URL the client got.
    assert_eq!(answer.metadata["response_audio"], audio);
    assert_eq!(question.conversation_id, answer.conversation_id);

    let metrics = metrics(&server).await;
    assert!(
        metrics.contains("voxgate_chat_requests_total{surface=\"intentlayer\"} 1"),
        "{metrics}"
    );

    // info reflects the interaction.
    let (status, info) = get(&server, &format!("/api/v1/sessions/info/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["success"], true);
    assert_eq!(info["session_info"]["interaction_count"], 1);
    assert_eq!(info["session_info"]["user_id"], "user123");
}

#[tokio::test]
async fn seed_usage_examples() {
    let server = start(|_| {}).await;
    let id = session_id(&create(&server, "user123", "fr").await);

    let registration = chat(&server, &id, "Je veux créer un formulaire d'inscription").await;
    assert_eq!(registration["nlp_analysis"]["intent"], "create_form");
    assert_eq!(
        registration["nlp_analysis"]["entities"],
        json!([{"type": "form_type", "value": "registration"}])
    );
    let names: Vec<&str> = registration["ui_components"][0]["props"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["name", "email", "password"]);
    assert_eq!(
        registration["response_text"],
        "J'ai créé un formulaire d'inscription avec les champs nom, email et mot de passe."
    );

    let navigation = chat(&server, &id, "Ajoute un menu de navigation").await;
    assert_eq!(navigation["nlp_analysis"]["intent"], "create_navigation");
    assert_eq!(kinds(&navigation), ["navigation"]);
    let links = navigation["ui_components"][0]["props"]["links"]
        .as_array()
        .unwrap();
    assert!(links.len() >= 3);
    assert!(
        links
            .iter()
            .all(|l| l["label"].is_string() && l["href"].is_string())
    );
    assert_eq!(
        navigation["response_text"],
        "Voici un menu de navigation avec les sections principales de votre site."
    );

    let dashboard = chat(
        &server,
        &id,
        "Crée un tableau de bord avec des statistiques",
    )
    .await;
    assert_eq!(dashboard["nlp_analysis"]["intent"], "create_dashboard");
    let dashboard_kinds = kinds(&dashboard);
    for kind in ["card", "chart", "layout"] {
        assert!(
            dashboard_kinds.iter().any(|k| k == kind),
            "{kind} in {dashboard_kinds:?}"
        );
    }
    let layout = dashboard["ui_components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "layout")
        .unwrap();
    assert!(layout["props"]["columns"].as_u64().unwrap() >= 1);
    assert!(
        layout["props"]["children"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] == "card")
    );
    let chart = dashboard["ui_components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "chart")
        .unwrap();
    assert!(chart["props"]["type"].is_string() && chart["props"]["data"].is_object());
    let card = dashboard["ui_components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "card")
        .unwrap();
    assert!(card["props"]["title"].is_string());
    assert_eq!(
        dashboard["response_text"],
        "J'ai créé un tableau de bord avec vos métriques principales."
    );

    let unknown = chat(&server, &id, "Quel temps fera-t-il demain à Lyon ?").await;
    assert_eq!(unknown["nlp_analysis"]["intent"], "unknown");
    assert!(unknown["nlp_analysis"]["confidence"].as_f64().unwrap() < 0.5);
    assert_eq!(unknown["ui_components"], json!([]));
    assert_eq!(unknown["nlp_analysis"]["entities"], json!([]));
    assert_eq!(unknown["session_info"]["interaction_count"], 4);

    // An English-speaking user gets English answers.
    let english = session_id(&create(&server, "user456", "en").await);
    let response = chat(&server, &english, "Please create a contact form").await;
    assert_eq!(
        response["response_text"],
        "I created a contact form with the fields name, email and message."
    );
    assert_eq!(
        response["ui_components"][0]["props"]["fields"][0]["label"],
        "Name"
    );
}

#[tokio::test]
async fn bad_input_is_422_naming_the_field() {
    let server = start(|_| {}).await;
    let id = session_id(&create(&server, "user123", "fr").await);
    let cases = [
        ("/api/v1/sessions/create", json!({}), "user_id"),
        ("/api/v1/sessions/create", json!({"user_id": 42}), "user_id"),
        (
            "/api/v1/sessions/create",
            json!({"user_id": "  "}),
            "user_id",
        ),
        (
            "/api/v1/sessions/create",
            json!({"user_id": "a/b"}),
            "user_id",
        ),
        (
            "/api/v1/sessions/create",
            json!({"user_id": "u", "user_data": "x"}),
            "user_data",
        ),
        (
            "/api/v1/sessions/create",
            json!({"user_id": "u", "context": [1]}),
            "context",
        ),
        ("/api/v1/sessions/create", json!([1, 2]), "body"),
        (
            "/api/v1/sessions/chat",
            json!({"message": "hi"}),
            "session_id",
        ),
        (
            "/api/v1/sessions/chat",
            json!({"session_id": id, "message": ""}),
            "message",
        ),
        (
            "/api/v1/sessions/chat",
            json!({"session_id": id}),
            "message",
        ),
        (
            "/api/v1/sessions/chat",
            json!({"session_id": id, "message": "x".repeat(4001)}),
            "message",
        ),
        (
            "/api/v1/sessions/chat",
            json!({"session_id": id, "message": "hi", "input_type": "video"}),
            "input_type",
        ),
        (
            "/api/v1/sessions/chat",
            json!({"session_id": id, "message": "hi", "context": "x"}),
            "context",
        ),
    ];
    for (path, body, field) in cases {
        let (status, response) = post(&server, path, body.clone()).await;
        assert_eq!(status, 422, "{path} {body}: {response}");
        assert_eq!(
            keys(&response),
            ["field", "message", "success"],
            "{response}"
        );
        assert_eq!(response["success"], false);
        assert_eq!(response["field"], field, "{path} {body}: {response}");
        assert!(response["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A body that is not JSON at all.
    let response = client()
        .post(server.http_url("/api/v1/sessions/create"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    let (status, body) = json_response(response).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("body")));
    // Nothing of the above counted as an interaction.
    let (_, info) = get(&server, &format!("/api/v1/sessions/info/{id}")).await;
    assert_eq!(info["session_info"]["interaction_count"], 0);
}

#[tokio::test]
async fn unknown_sessions_are_404_in_the_seed_shape() {
    let server = start(|_| {}).await;
    let expected = json!({"success": false, "message": "Session non trouvée"});
    let unknown = format!("sess_{}", uuid::Uuid::new_v4());
    for id in [unknown.as_str(), "sess_abc123", "nope"] {
        let (status, body) = post(
            &server,
            "/api/v1/sessions/chat",
            json!({"session_id": id, "message": "hi"}),
        )
        .await;
        assert_eq!((status, &body), (404, &expected), "chat {id}");
        let (status, body) = get(&server, &format!("/api/v1/sessions/info/{id}")).await;
        assert_eq!((status, &body), (404, &expected), "info {id}");
        let (status, body) = get(&server, &format!("/api/v1/sessions/history/{id}")).await;
        assert_eq!((status, &body), (404, &expected), "history {id}");
        let response = client()
            .delete(server.http_url(&format!("/api/v1/sessions/delete/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            json_response(response).await,
            (404, expected.clone()),
            "delete {id}"
        );
    }
    let (status, body) = get(&server, "/audio/response_nope.wav").await;
    assert_eq!((status, body["success"].as_bool()), (404, Some(false)));
}

/// Percent-encoded bytes that are not UTF-8 cannot be a session id, a user id or a file name: 422 in the seed's
/// error shape, naming the path parameter, and the server goes on.
#[tokio::test]
async fn path_parameters_that_are_not_text_are_422_naming_them() {
    let server = start(|_| {}).await;
    for (method, path, field) in [
        (
            reqwest::Method::GET,
            "/api/v1/sessions/info/%FF",
            "session_id",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/sessions/history/sess_%C3%28",
            "session_id",
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/sessions/delete/%ED%A0%80",
            "session_id",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/sessions/list/user%FF",
            "user_id",
        ),
        (reqwest::Method::GET, "/audio/response_%FF.wav", "file"),
    ] {
        let response = client()
            .request(method.clone(), server.http_url(path))
            .send()
            .await
            .unwrap();
        let (status, body) = json_response(response).await;
        assert_eq!(
            (status, body["success"].as_bool(), body["field"].as_str()),
            (422, Some(false), Some(field)),
            "{method} {path}: {body}"
        );
    }
    let created = create(&server, "user123", "fr").await;
    assert_eq!(created["success"], true);
}

#[tokio::test]
async fn delete_and_list() {
    let server = start(|_| {}).await;
    let first = session_id(&create(&server, "carol", "fr").await);
    let second = session_id(&create(&server, "carol", "fr").await);
    create(&server, "dave", "fr").await;

    let (status, listed) = get(&server, "/api/v1/sessions/list/carol").await;
    assert_eq!(status, 200);
    assert_eq!(listed["success"], true);
    assert_eq!(listed["user_id"], "carol");
    assert_eq!(listed["total"], 2);
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    assert!(
        listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["is_active"] == true && s["user_id"] == "carol")
    );

    let audio = chat(&server, &first, "Ajoute un bouton").await["response_audio"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        client()
            .get(server.http_url(&audio))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let response = client()
        .delete(server.http_url(&format!("/api/v1/sessions/delete/{first}")))
        .send()
        .await
        .unwrap();
    let (status, body) = json_response(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "message": "Session supprimée avec succès", "session_id": first})
    );
    // Gone: info, chat, its audio, and the listing.
    assert_eq!(
        get(&server, &format!("/api/v1/sessions/info/{first}"))
            .await
            .0,
        404
    );
    assert_eq!(
        client()
            .get(server.http_url(&audio))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let (_, listed) = get(&server, "/api/v1/sessions/list/carol").await;
    assert_eq!(listed["total"], 1);
    let (status, listed) = get(&server, "/api/v1/sessions/list/nobody").await;
    assert_eq!((status, listed["total"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn history_gives_each_interaction_as_chat_answered_it() {
    // More reads than a session's burst.
    let server = start(|config| config.chat.intentlayer_rate_per_minute = 0).await;
    let id = session_id(&create(&server, "erin", "fr").await);
    let history = format!("/api/v1/sessions/history/{id}");
    let (status, body) = get(&server, &history).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "success": true,
            "message": "Historique de la session",
            "session_id": id,
            "messages": [],
            "has_more": false,
            "next_before": null
        })
    );

    let questions = [
        "Créer un formulaire de contact",
        "Ajoute un bouton",
        "Affiche un graphique en camembert",
    ];
    let mut answers = Vec::new();
    for question in questions {
        answers.push(chat(&server, &id, question).await);
    }
    let (_, info_before) = get(&server, &format!("/api/v1/sessions/info/{id}")).await;

    let (status, body) = get(&server, &history).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["has_more"].clone(), body["next_before"].clone()),
        (json!(false), Value::Null)
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6, "{body}");
    for (i, (question, answer)) in questions.iter().zip(&answers).enumerate() {
        let (asked, answered) = (&messages[2 * i], &messages[2 * i + 1]);
        assert_eq!(asked["message_id"], answer["message_id"]);
        assert_eq!(asked["role"], "user");
        assert_eq!(asked["content"], *question);
        assert_eq!(asked["input_type"], "text");
        assert_eq!(
            asked["context"],
            json!({"page": "/contact", "timestamp": "2024-01-15T10:35:00Z"})
        );
        assert_eq!(answered["message_id"], answer["response_id"]);
        assert_eq!(answered["role"], "assistant");
        assert_eq!(answered["content"], answer["response_text"]);
        assert_eq!(answered["response_audio"], answer["response_audio"]);
        assert_eq!(answered["ui_components"], answer["ui_components"]);
        assert_eq!(answered["nlp_analysis"], answer["nlp_analysis"]);
        assert!(asked["timestamp"].as_str() <= answered["timestamp"].as_str());
    }
    let all: Vec<&Value> = messages.iter().map(|m| &m["message_id"]).collect();

    // Two at a time, newest page first, each page oldest first.
    let mut paged = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &before {
            Some(cursor) => format!("{history}?limit=2&before={cursor}"),
            None => format!("{history}?limit=2"),
        };
        let (status, page) = get(&server, &path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let ids: Vec<Value> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message_id"].clone())
            .collect();
        assert_eq!(ids.len(), 2);
        paged.splice(0..0, ids);
        if page["has_more"] == false {
            assert_eq!(page["next_before"], Value::Null);
            break;
        }
        before = Some(page["next_before"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages, 3);
    assert_eq!(paged.iter().collect::<Vec<_>>(), all);

    // Reading the history is not an interaction.
    let (_, info_after) = get(&server, &format!("/api/v1/sessions/info/{id}")).await;
    assert_eq!(info_after, info_before);

    // Every page read so far is kept rendered; an interaction makes each of them new again.
    let (_, newest) = get(&server, &format!("{history}?limit=2")).await;
    let answer = chat(&server, &id, "Montre le tableau de bord").await;
    let (_, after) = get(&server, &format!("{history}?limit=2")).await;
    assert_ne!(after, newest);
    let ids: Vec<&Value> = after["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["message_id"])
        .collect();
    assert_eq!(ids, [&answer["message_id"], &answer["response_id"]]);
    let (_, body) = get(&server, &history).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 8, "{body}");

    // Of the eight reads, one was served from the page cache: the newest page of two, read again before the
    // last interaction. Every other read was the first of its page since the session's last interaction.
    let exposition = metrics(&server).await;
    for series in [
        "voxgate_history_page_lookups_total{result=\"hit\"} 1",
        "voxgate_history_page_lookups_total{result=\"miss\"} 7",
    ] {
        assert!(exposition.contains(series), "{series}:\n{exposition}");
    }
}

/// Another process (here a second store on the server's database, as the ops CLI opens it) adding an
/// interaction is seen by the next history read, once the server's store has seen the write (SQLite:
/// `data_version`, polled every 250 ms).
#[tokio::test]
async fn history_shows_interactions_written_by_another_process() {
    let server = start(|_| {}).await;
    let id = session_id(&create(&server, "frank", "fr").await);
    chat(&server, &id, "Créer un formulaire de contact").await;
    let history = format!("/api/v1/sessions/history/{id}");
    let (_, before) = get(&server, &history).await;
    assert_eq!(before["messages"].as_array().unwrap().len(), 2);

    let other = voxgate::chat::Store::open_sqlite(&server.data_dir().join("voxgate.db"))
        .await
        .unwrap();
    let store_id = id.strip_prefix("sess_").unwrap();
    let (_, written) = other
        .record_turn(store_id, None, |_| {
            vec![
                voxgate::chat::NewMessage::new(voxgate::chat::Role::User, "écrit ailleurs"),
                voxgate::chat::NewMessage::new(
                    voxgate::chat::Role::Assistant,
                    "réponse d'ailleurs",
                ),
            ]
        })
        .await
        .unwrap()
        .expect("the session exists");
    other.close().await;

    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let body = loop {
        let (status, body) = get(&server, &history).await;
        assert_eq!(status, 200, "{body}");
        if body["messages"].as_array().unwrap().len() == 4 {
            break body;
        }
        assert_eq!(body, before, "a page is the old one or the new one");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other process's interaction never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["messages"][2]["message_id"], written[0].id.as_str());
    assert_eq!(body["messages"][3]["content"], "réponse d'ailleurs");
}

#[tokio::test]
async fn history_paging_errors_are_422_naming_the_parameter() {
    let server = start(|_| {}).await;
    let id = session_id(&create(&server, "frank", "en").await);
    let other = session_id(&create(&server, "grace", "en").await);
    chat(&server, &id, "Add a button").await;
    let foreign = chat(&server, &other, "Add a button").await["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = format!("/api/v1/sessions/history/{id}");
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("before=nope", "before"),
        (&format!("before={}", uuid::Uuid::now_v7()), "before"),
        // A message of another session's conversation is no cursor of this one.
        (&format!("before={foreign}"), "before"),
    ] {
        let (status, body) = get(&server, &format!("{history}?{query}")).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{query}: {body}"
        );
        assert_eq!(body["success"], false);
    }
    let (status, body) = get(&server, &format!("{history}?limit=200")).await;
    assert_eq!(
        (status, body["messages"].as_array().map(Vec::len)),
        (200, Some(2))
    );
}

fn audio_dir(server: &voxgate::testing::TestServer, wire_id: &str) -> std::path::PathBuf {
    server
        .data_dir()
        .join("audio")
        .join(wire_id.strip_prefix("sess_").unwrap())
}

#[tokio::test]
async fn per_user_limit_evicts_the_oldest_with_its_audio() {
    let server = start(|config| config.chat.max_sessions_per_user = 2).await;
    let oldest = session_id(&create(&server, "erin", "fr").await);
    let audio = chat(&server, &oldest, "Créer un formulaire de contact").await["response_audio"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        client()
            .get(server.http_url(&audio))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert!(audio_dir(&server, &oldest).exists());

    let middle = session_id(&create(&server, "erin", "fr").await);
    let newest = session_id(&create(&server, "erin", "fr").await);
    assert_eq!(
        get(&server, &format!("/api/v1/sessions/info/{oldest}"))
            .await
            .0,
        404
    );
    assert!(
        !audio_dir(&server, &oldest).exists(),
        "evicted session's audio is removed"
    );
    assert_eq!(
        client()
            .get(server.http_url(&audio))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    for id in [&middle, &newest] {
        assert_eq!(
            get(&server, &format!("/api/v1/sessions/info/{id}")).await.0,
            200
        );
    }
    let (_, listed) = get(&server, "/api/v1/sessions/list/erin").await;
    assert_eq!(listed["total"], 2);
}

#[tokio::test]
async fn idle_sessions_expire_with_their_audio() {
    let server = start(|config| config.chat.session_ttl = Duration::from_millis(800)).await;
    let idle = session_id(&create(&server, "frank", "fr").await);
    let audio = chat(&server, &idle, "Ajoute un menu de navigation").await["response_audio"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        client()
            .get(server.http_url(&audio))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let dir = audio_dir(&server, &idle);
    assert!(dir.exists());

    // A session in use stays alive past the TTL.
    let busy = session_id(&create(&server, "frank", "fr").await);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        chat(&server, &busy, "Ajoute un bouton").await;
    }
    // The sweeper removed the idle one on its own (no request touched it): its audio is gone.
    assert!(
        eventually(Duration::from_secs(5), || !dir.exists()).await,
        "sweeper removes expired audio"
    );
    assert_eq!(
        get(&server, &format!("/api/v1/sessions/info/{idle}"))
            .await
            .0,
        404
    );
    assert_eq!(
        get(&server, &format!("/api/v1/sessions/info/{busy}"))
            .await
            .0,
        200
    );
}

/// A loopback OpenAI-compatible server that answers every completion with a fixed JSON document per
/// request kind: a valid intent analysis for messages mentioning "contact", prose otherwise. It records
/// whether JSON mode was requested.
async fn fake_llm() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    use axum::routing::post;
    let requests: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let seen = requests.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let user = body["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(body);
                let content = if user.contains("contact") {
                    json!({
                        "intent": "create_form",
                        "entities": [{"type": "form_type", "value": "contact"}],
                        "confidence": 0.88,
                        "response_text": "Voici votre formulaire de contact, généré par le modèle."
                    })
                    .to_string()
                } else {
                    "Sure! I think you want some kind of menu.".to_owned()
                };
                axum::Json(json!({
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, requests)
}

#[tokio::test]
async fn llm_analysis_is_validated_with_the_rules_as_fallback() {
    let (llm, requests) = fake_llm().await;
    let server = start(|config| config.chat.llm_url = Some(format!("http://{llm}/v1"))).await;
    let id = session_id(&create(&server, "gina", "fr").await);

    // A valid model verdict is used: its text, its intent, and the generator's components.
    let response = chat(&server, &id, "Il me faut un formulaire de contact").await;
    assert_eq!(
        response["response_text"],
        "Voici votre formulaire de contact, généré par le modèle."
    );
    assert_eq!(response["nlp_analysis"]["intent"], "create_form");
    assert_eq!(
        response["nlp_analysis"]["entities"],
        json!([{"type": "form_type", "value": "contact"}])
    );
    assert!((response["nlp_analysis"]["confidence"].as_f64().unwrap() - 0.88).abs() < 1e-6);
    assert_eq!(kinds(&response), ["form"]);
    let first = requests.lock().unwrap()[0].clone();
    assert_eq!(
        first["response_format"]["type"], "json_object",
        "JSON mode requested: {first}"
    );

    // Prose instead of JSON: the rule-based classifier answers.
    let response = chat(&server, &id, "Ajoute un menu de navigation").await;
    assert_eq!(response["nlp_analysis"]["intent"], "create_navigation");
    assert_eq!(
        response["response_text"],
        "Voici un menu de navigation avec les sections principales de votre site."
    );
    assert_eq!(requests.lock().unwrap().len(), 2);
}

/// What `espeak-ng` makes of `text` in `language` (the server's synthesiser when it is installed, fed the same
/// way: the text and a newline on stdin); `None` when it is not installed.
fn espeak_rendering(text: &str, language: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("expected.wav");
    let mut child = match std::process::Command::new("espeak-ng")
        .args(["-v", language, "-w"])
        .arg(&out)
        .arg("--stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => panic!("cannot run espeak-ng: {error}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{text}\n").as_bytes()).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    Some(std::fs::read(out).unwrap())
}

/// Asserts that `bytes` is `text` spoken in `language`: a RIFF/WAVE file with audible samples that is, byte for
/// byte, espeak-ng's rendering of the text when espeak-ng is installed, else the generated tone.
fn assert_spoken(bytes: &[u8], text: &str, language: &str) {
    assert!(bytes.len() > 44 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE");
    let samples = voxgate_dsp::wav::WavReader::new(std::io::Cursor::new(bytes))
        .expect("a readable WAV")
        .read_to_end()
        .expect("readable samples");
    let peak = samples.iter().fold(0.0_f32, |peak, s| peak.max(s.abs()));
    assert!(
        !samples.is_empty() && peak > 0.05,
        "silent audio (peak {peak})"
    );
    match espeak_rendering(text, language) {
        Some(expected) => assert!(
            bytes == expected.as_slice(),
            "the WAV is not espeak-ng's rendering of {text:?} in {language}"
        ),
        None => assert_eq!(bytes, voxgate::api::intentlayer::tts::tone_wav().as_slice()),
    }
}

async fn get_audio(server: &voxgate::testing::TestServer, url: &str) -> (u16, Vec<u8>) {
    let response = client().get(server.http_url(url)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn audio_is_rendered_on_request_from_the_stored_answer() {
    let server = start(|_| {}).await;
    let id = session_id(&create(&server, "hugo", "en").await);
    let first = chat(&server, &id, "Please create a contact form").await;
    let second = chat(&server, &id, "Add a button").await;
    // The chat requests wrote nothing to disk: the answers are in the store only.
    let dir = audio_dir(&server, &id);
    assert!(!dir.exists(), "a chat request wrote audio files");
    let store = server.state.chat.store();
    let answer = store
        .get_message(first["response_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.metadata["language"], "en");

    // Concurrent first requests of one answer share one render and get the same bytes.
    let url = second["response_audio"].as_str().unwrap().to_owned();
    let gets: Vec<_> = (0..4)
        .map(|_| {
            let url = server.http_url(&url);
            tokio::spawn(async move {
                let response = client().get(url).send().await.unwrap();
                (response.status().as_u16(), response.bytes().await.unwrap())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for get in gets {
        let (status, body) = get.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
    assert_spoken(&bodies[0], second["response_text"].as_str().unwrap(), "en");
    let (status, bytes) = get_audio(&server, first["response_audio"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_spoken(&bytes, first["response_text"].as_str().unwrap(), "en");
    // Cached beside each other in the session directory, nothing else.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["response_1.wav", "response_2.wav"]);

    // An answer that does not exist (yet), or a session that never did: the seed's 404.
    let store_id = id.strip_prefix("sess_").unwrap();
    let expected = json!({"success": false, "message": "Fichier audio non trouvé"});
    for url in [
        format!("/audio/response_{store_id}_3.wav"),
        format!("/audio/response_{store_id}_0.wav"),
        format!("/audio/response_{}_1.wav", uuid::Uuid::new_v4()),
    ] {
        assert_eq!(get(&server, &url).await, (404, expected.clone()), "{url}");
    }
    assert!(!std::path::Path::new(&dir).join("response_3.wav").exists());

    // A conversation holding more than the turns (another writer appended to it): the answer is still found.
    let conversation = answer.conversation_id.clone();
    store
        .append_message(
            &conversation,
            &voxgate::chat::NewMessage::new(voxgate::chat::Role::User, "a note"),
        )
        .await
        .unwrap();
    let third = chat(&server, &id, "Ajoute une carte").await;
    let (status, bytes) = get_audio(&server, third["response_audio"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_spoken(&bytes, third["response_text"].as_str().unwrap(), "en");
    // The first answer, its cached file lost, sits at another place than a turn count predicts.
    std::fs::remove_file(dir.join("response_1.wav")).unwrap();
    let (status, bytes) = get_audio(&server, first["response_audio"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_spoken(&bytes, first["response_text"].as_str().unwrap(), "en");
}

/// The seed's 429: the limit named, `Retry-After` equal to the additive `retry_after`.
async fn assert_rate_limited(response: reqwest::Response, per_minute: u32) {
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = json_response(response).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(keys(&body), ["message", "retry_after", "success"]);
    assert_eq!(body["success"], false);
    assert_eq!(body["retry_after"], retry_after);
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{per_minute} requêtes par minute")),
        "{message}"
    );
}

fn post_request(
    server: &voxgate::testing::TestServer,
    path: &str,
    body: Value,
) -> reqwest::RequestBuilder {
    client().post(server.http_url(path)).json(&body)
}

#[tokio::test]
async fn requests_past_the_rate_limit_are_429_and_change_nothing() {
    // 2 per minute: one every 30 s and a burst of 1, so that nothing replenishes while the test runs, however
    // slow the machine; the wait is simulated by moving the limiter's clock.
    let server = start(|config| config.chat.intentlayer_rate_per_minute = 2).await;
    let limiter = server.state.api.intentlayer.rate_limiter();
    let id = session_id(&create(&server, "ines", "fr").await);
    let store_id = id.strip_prefix("sess_").unwrap().to_owned();
    let store = server.state.chat.store();
    // An invalid request is not counted: the one request of the burst is still there.
    let (status, _) = post(
        &server,
        "/api/v1/sessions/chat",
        json!({"session_id": id, "message": ""}),
    )
    .await;
    assert_eq!(status, 422);
    chat(&server, &id, "Ajoute un bouton").await;

    // Past the limit: refused, and nothing stored.
    let message = json!({"session_id": id, "message": "Ajoute un menu de navigation"});
    let response = post_request(&server, "/api/v1/sessions/chat", message)
        .send()
        .await
        .unwrap();
    assert_rate_limited(response, 2).await;
    let session = store.get_session(&store_id).await.unwrap().unwrap();
    assert_eq!(session.interaction_count, 1);
    let conversation = session.conversation_id.unwrap();
    assert_eq!(store.count_messages(&conversation).await.unwrap(), 2);
    // info, history and delete spend the same session budget: the session is not deleted.
    for read in ["info", "history"] {
        let response = client()
            .get(server.http_url(&format!("/api/v1/sessions/{read}/{id}")))
            .send()
            .await
            .unwrap();
        assert_rate_limited(response, 2).await;
    }
    let response = client()
        .delete(server.http_url(&format!("/api/v1/sessions/delete/{id}")))
        .send()
        .await
        .unwrap();
    assert_rate_limited(response, 2).await;
    assert!(store.get_session(&store_id).await.unwrap().is_some());

    // create and list spend the user's budget (create already took it): refused, nothing created.
    let response = post_request(
        &server,
        "/api/v1/sessions/create",
        json!({"user_id": "ines"}),
    )
    .send()
    .await
    .unwrap();
    assert_rate_limited(response, 2).await;
    let response = client()
        .get(server.http_url("/api/v1/sessions/list/ines"))
        .send()
        .await
        .unwrap();
    assert_rate_limited(response, 2).await;
    let sessions = store
        .list_sessions("ines", Some("intentlayer"), true)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    // Six refusals, counted for this surface only.
    let exposition = metrics(&server).await;
    for series in [
        "voxgate_rate_limited_total{surface=\"intentlayer\"} 6",
        "voxgate_rate_limited_total{surface=\"chatbot\"} 0",
    ] {
        assert!(exposition.contains(series), "{series} in {exposition}");
    }

    // Another user and their session are unaffected.
    let other = session_id(&create(&server, "jules", "fr").await);
    let response = chat(&server, &other, "Ajoute un bouton").await;
    assert_eq!(response["session_info"]["interaction_count"], 1);

    // Half a minute later (the limiter's clock moved instead of sleeping), each budget has one request again.
    limiter.clock().advance(Duration::from_secs(30));
    let response = chat(&server, &id, "Ajoute un menu de navigation").await;
    assert_eq!(response["session_info"]["interaction_count"], 2);
    let (status, listed) = get(&server, "/api/v1/sessions/list/ines").await;
    assert_eq!((status, listed["total"].as_u64()), (200, Some(1)));
}

#[tokio::test]
async fn a_rate_of_zero_disables_the_limit() {
    let server = start(|config| config.chat.intentlayer_rate_per_minute = 0).await;
    let id = session_id(&create(&server, "karl", "fr").await);
    for _ in 0..40 {
        let (status, body) = get(&server, &format!("/api/v1/sessions/info/{id}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.state.api.intentlayer.rate_limiter().keys(), 0);
}
