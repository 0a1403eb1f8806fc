//! `RedisStore` on a real three-node Redis Cluster started by the test: sessions spread over the
//! nodes' slots and every operation (create, load, save, touch, delete) is routed correctly.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;

use tower_sticky::session::{RedisStore, SessionStore};

use support::http::serve_router;
use support::redis_server::{RedisServer, create_cluster};
use support::session_app::{User, app, key_set, layer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_across_a_redis_cluster() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
    create_cluster(&nodes);
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let store_a: Arc<dyn SessionStore> =
        Arc::new(RedisStore::connect_cluster(&urls).await.expect("cluster"));
    let store_b: Arc<dyn SessionStore> =
        Arc::new(RedisStore::connect_cluster(&urls).await.expect("cluster"));
    let a = serve_router("127.0.0.1:0", app("a", layer(store_a))).await;
    let b = serve_router("127.0.0.1:0", app("b", layer(store_b))).await;

    // Enough users that their sessions land on every node's slots.
    let mut users = Vec::new();
    for i in 0..30 {
        let mut user = User::new();
        user.post_ok(&format!("{}/login?key=user{i}", a.url()))
            .await;
        user.post_ok(&format!("{}/cart?key=item{i}", a.url())).await;
        users.push(user);
    }
    let mut per_node = vec![0usize; nodes.len()];
    for (i, user) in users.iter_mut().enumerate() {
        assert_eq!(
            user.get_ok(&format!("{}/whoami", b.url())).await,
            format!("b:user{i}")
        );
        user.post_ok(&format!("{}/set?key=seen&value=b", b.url()))
            .await;
        assert_eq!(
            key_set(&user.get_ok(&format!("{}/keys", a.url())).await).len(),
            3
        );
        // Which node holds it: ask each node directly (non-owners answer MOVED/empty).
        let key = format!("session:{}", user.cookie.clone().expect("cookie"));
        for (n, node) in nodes.iter().enumerate() {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &node.port().to_string(), "exists", &key])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&out.stdout).trim() == "1" {
                per_node[n] += 1;
            }
        }
        user.post_ok(&format!("{}/logout", b.url())).await;
        assert_eq!(
            user.get_ok(&format!("{}/whoami", a.url())).await,
            "a:anonymous"
        );
    }
    assert_eq!(per_node.iter().sum::<usize>(), users.len());
    assert!(per_node.iter().all(|&n| n > 0), "spread: {per_node:?}");
}
