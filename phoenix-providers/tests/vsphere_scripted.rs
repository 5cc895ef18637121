//! The vSphere client against a scripted loopback SOAP server, for what
//! vcsim cannot show: tasks that run for a while and past their deadline,
//! property reads paged with continuation tokens (vcsim ignores
//! `maxObjects`), a session vCenter forgets (a `NotAuthenticated` fault),
//! transient faults and lost answers, and the `Logout` sent when the last
//! client is dropped. No peer needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use phoenix_core::id::{IdempotencyToken, ImageId, OperationId, PoolId, ServerId};
use phoenix_core::labels::{keys, Labels};
use phoenix_core::ports::{BootPayload, Compute, ErrorKind, LaunchRequest};
use phoenix_core::retry::RetryPolicy;
use phoenix_providers::vsphere::xml::MoRef;
use phoenix_providers::vsphere::{
    fault_type, tasks, SoapCall, VsphereClient, VsphereCompute, VsphereConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the script answers: HTTP status, body, and whether to drop the
/// connection without an answer.
enum Reply {
    Ok(String),
    Fault(&'static str, &'static str),
    Http(u16, &'static str),
    Drop,
}

type Script = Arc<dyn Fn(&str, &str, usize) -> Reply + Send + Sync>;

/// A loopback server that answers SOAP calls from a script and records
/// the methods called, in order.
struct Server {
    url: String,
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl Server {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://u:secret-pass@{}/sdk",
            listener.local_addr().unwrap()
        );
        let calls: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut stream).await else {
                        return;
                    };
                    let method = method_of(&body);
                    let n = {
                        let mut c = seen.lock().unwrap();
                        c.push((method.clone(), body.clone()));
                        c.iter().filter(|(m, _)| *m == method).count()
                    };
                    let (status, text, cookie) = match script(&method, &body, n) {
                        Reply::Ok(inner) => (200, envelope(&inner), method == "Login"),
                        Reply::Fault(kind, msg) => (500, fault(kind, msg), false),
                        Reply::Http(status, text) => (status, text.to_owned(), false),
                        Reply::Drop => return,
                    };
                    let cookie = if cookie {
                        format!(
                            "Set-Cookie: vmware_soap_session=\"s{}\"; Path=/; HttpOnly\r\n",
                            seen.lock().unwrap().len()
                        )
                    } else {
                        String::new()
                    };
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\n{cookie}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { url, calls }
    }

    fn count(&self, method: &str) -> usize {
        self.bodies(method).len()
    }

    fn bodies(&self, method: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text[end + 4..].to_owned());
            }
        }
    }
}

fn method_of(body: &str) -> String {
    let after = body.split("<soapenv:Body><").nth(1).unwrap_or_default();
    after
        .split([' ', '>'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"
    )
}

fn fault(kind: &str, msg: &str) -> String {
    envelope(&format!(
        "<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{msg}</faultstring><detail><{kind}Fault xmlns=\"urn:vim25\" xsi:type=\"{kind}\"/></detail></soapenv:Fault>"
    ))
}

const CONTENT: &str = "<RetrieveServiceContentResponse xmlns=\"urn:vim25\"><returnval><rootFolder type=\"Folder\">group-d1</rootFolder><propertyCollector type=\"PropertyCollector\">propertyCollector</propertyCollector><viewManager type=\"ViewManager\">ViewManager</viewManager><about><apiType>VirtualCenter</apiType><apiVersion>8.0</apiVersion></about><sessionManager type=\"SessionManager\">SessionManager</sessionManager><searchIndex type=\"SearchIndex\">SearchIndex</searchIndex><customFieldsManager type=\"CustomFieldsManager\">CustomFieldsManager</customFieldsManager></returnval></RetrieveServiceContentResponse>";

/// The answers every session needs.
fn common(method: &str) -> Option<Reply> {
    Some(match method {
        "RetrieveServiceContent" => Reply::Ok(CONTENT.into()),
        "Login" => Reply::Ok("<LoginResponse xmlns=\"urn:vim25\"><returnval><key>k</key></returnval></LoginResponse>".into()),
        "Logout" => Reply::Ok("<LogoutResponse xmlns=\"urn:vim25\"/>".into()),
        _ => return None,
    })
}

fn task_info(state: &str) -> String {
    format!(
        "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects><obj type=\"Task\">task-1</obj><propSet><name>info.state</name><val xsi:type=\"TaskInfoState\">{state}</val></propSet></objects></returnval></RetrievePropertiesExResponse>"
    )
}

fn config(url: &str) -> VsphereConfig {
    VsphereConfig::builder(url)
        .unwrap()
        .datacenter("DC0")
        .task_poll(Duration::from_millis(5))
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retries: 3,
            jitter_seed: Some(1),
        })
        .build()
        .unwrap()
}

const STARTED: &str = "<PowerOnVM_TaskResponse xmlns=\"urn:vim25\"><returnval type=\"Task\">task-1</returnval></PowerOnVM_TaskResponse>";

#[tokio::test]
async fn a_running_task_is_read_until_it_ends() {
    let server = Server::start(Arc::new(|m, _, n| {
        common(m).unwrap_or_else(|| match m {
            "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
            // queued, running, running, then success.
            "RetrievePropertiesEx" => Reply::Ok(task_info(match n {
                1 => "queued",
                2 | 3 => "running",
                _ => "success",
            })),
            _ => Reply::Http(404, "no"),
        })
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    tasks::run(&client, &SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap();
    assert_eq!(server.count("RetrievePropertiesEx"), 4);
    assert_eq!(server.count("PowerOnVM_Task"), 1);
}

#[tokio::test]
async fn a_task_past_its_deadline_is_a_temporary_error() {
    let server = Server::start(Arc::new(|m, _, _| {
        common(m).unwrap_or_else(|| match m {
            "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
            "RetrievePropertiesEx" => Reply::Ok(task_info("running")),
            _ => Reply::Http(404, "no"),
        })
    }))
    .await;
    let cfg = VsphereConfig::builder(&server.url)
        .unwrap()
        .task_poll(Duration::from_millis(5))
        .task_deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let client = VsphereClient::new(cfg).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    let started = std::time::Instant::now();
    let e = tasks::run(&client, &SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("task-1 still running"), "{e}");
}

#[tokio::test]
async fn a_failed_task_is_typed_with_vspheres_message() {
    let server = Server::start(Arc::new(|m, _, _| {
        common(m).unwrap_or_else(|| match m {
            "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
            "RetrievePropertiesEx" => Reply::Ok(
                "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects><obj type=\"Task\">task-1</obj><propSet><name>info.state</name><val>error</val></propSet><propSet><name>info.error</name><val xsi:type=\"LocalizedMethodFault\"><fault xsi:type=\"InsufficientResourcesFault\"/><localizedMessage>Insufficient resources to satisfy configured failover level for vSphere HA.</localizedMessage></val></propSet></objects></returnval></RetrievePropertiesExResponse>".into(),
            ),
            _ => Reply::Http(404, "no"),
        })
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    let e = tasks::run(&client, &SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap_err();
    assert_eq!(fault_type(&e), Some("InsufficientResourcesFault"));
    assert!(e.is_retryable());
    assert!(
        e.chain().contains("failover level for vSphere HA"),
        "{}",
        e.chain()
    );
}

fn vm_object(i: usize) -> String {
    format!(
        "<objects><obj type=\"VirtualMachine\">vm-{i}</obj><propSet><name>name</name><val>web-{i}</val></propSet><propSet><name>runtime.powerState</name><val>poweredOn</val></propSet><propSet><name>guest.ipAddress</name><val>10.0.0.{i}</val></propSet></objects>"
    )
}

fn placement(m: &str, body: &str) -> Option<Reply> {
    Some(match m {
        "FindByInventoryPath" if body.contains("<inventoryPath>/DC0</inventoryPath>") => {
            Reply::Ok("<FindByInventoryPathResponse xmlns=\"urn:vim25\"><returnval type=\"Datacenter\">datacenter-2</returnval></FindByInventoryPathResponse>".into())
        }
        "FindByInventoryPath" => Reply::Ok("<FindByInventoryPathResponse xmlns=\"urn:vim25\"><returnval type=\"Folder\">group-v3</returnval></FindByInventoryPathResponse>".into()),
        "CreateContainerView" => Reply::Ok("<CreateContainerViewResponse xmlns=\"urn:vim25\"><returnval type=\"ContainerView\">session[1]view-1</returnval></CreateContainerViewResponse>".into()),
        _ => return None,
    })
}

#[tokio::test]
async fn pages_are_followed_by_their_tokens() {
    let server = Server::start(Arc::new(|m, body, _| {
        common(m)
            .or_else(|| placement(m, body))
            .unwrap_or_else(|| match m {
                "RetrievePropertiesEx" => Reply::Ok(format!(
                    "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><token>page-2</token>{}{}</returnval></RetrievePropertiesExResponse>",
                    vm_object(1),
                    vm_object(2)
                )),
                "ContinueRetrievePropertiesEx" if body.contains("<token>page-2</token>") => {
                    Reply::Ok(format!(
                        "<ContinueRetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><token>page-3</token>{}</returnval></ContinueRetrievePropertiesExResponse>",
                        vm_object(3)
                    ))
                }
                "ContinueRetrievePropertiesEx" if body.contains("<token>page-3</token>") => {
                    Reply::Ok(format!(
                        "<ContinueRetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval>{}</returnval></ContinueRetrievePropertiesExResponse>",
                        vm_object(4)
                    ))
                }
                _ => Reply::Http(404, "no"),
            })
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let compute = VsphereCompute::builder(client.clone())
        .custom_attributes(false)
        .build();
    let ids: Vec<ServerId> = (1..=4)
        .map(|i| ServerId::new(format!("vm-{i}")).unwrap())
        .collect();
    let seen = compute.describe(&ids).await.unwrap();
    assert_eq!(seen.len(), 4, "every page is read");
    assert_eq!(server.count("RetrievePropertiesEx"), 1);
    assert_eq!(server.count("ContinueRetrievePropertiesEx"), 2);
    let d = compute.describe_stats();
    assert_eq!((d.calls, d.max_requests_per_call), (1, 3));
    // It asks for pages (vCenter honours that; vcsim ignores it).
    assert!(server.bodies("RetrievePropertiesEx")[0].contains("<maxObjects>"));
}

#[tokio::test]
async fn a_forgotten_session_is_renewed_once() {
    let server = Server::start(Arc::new(|m, _, n| {
        common(m).unwrap_or_else(|| match m {
            // The first call finds the session expired.
            "PowerOnVM_Task" if n == 1 => {
                Reply::Fault("NotAuthenticated", "The session is not authenticated.")
            }
            "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
            _ => Reply::Http(404, "no"),
        })
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    client
        .call(&SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap();
    assert_eq!(client.logins(), 2);
    assert_eq!(server.count("Login"), 2);
    assert_eq!(server.count("PowerOnVM_Task"), 2);
}

#[tokio::test]
async fn a_wrong_password_is_not_retried_and_not_shown() {
    let server = Server::start(Arc::new(|m, _, _| match m {
        "RetrieveServiceContent" => Reply::Ok(CONTENT.into()),
        "Login" => Reply::Fault(
            "InvalidLogin",
            "Cannot complete login due to an incorrect user name or password.",
        ),
        _ => Reply::Http(404, "no"),
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    let e = client
        .call(&SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unauthorized(_)), "{e}");
    assert_eq!(server.count("Login"), 1, "a refused login is not retried");
    assert!(!format!("{e:?}").contains("secret-pass"));
}

#[tokio::test]
async fn transient_faults_are_retried_and_lost_answers_of_clones_are_not() {
    let server = Server::start(Arc::new(|m, _, n| {
        common(m).unwrap_or_else(|| match m {
            "PowerOnVM_Task" if n < 3 => Reply::Fault(
                "TaskInProgress",
                "The operation is not allowed in the current state.",
            ),
            "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
            "CloneVM_Task" if n == 1 => Reply::Fault("HostCommunication", "host not responding"),
            "CloneVM_Task" => Reply::Drop,
            "ReconfigVM_Task" => Reply::Http(503, "<html>Service Unavailable</html>"),
            _ => Reply::Http(404, "no"),
        })
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    client
        .call(&SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap();
    assert_eq!(
        server.count("PowerOnVM_Task"),
        3,
        "two busy faults, then done"
    );
    // A clone refused with a fault is retried (nothing was done); one
    // whose answer is lost is not (it may have started): the caller
    // looks for the VM by name instead.
    let e = client
        .call(&SoapCall::new("CloneVM_Task", &vm, "").not_idempotent())
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(server.count("CloneVM_Task"), 2);
    // A proxy's 503 page is transient.
    let e = client
        .call(&SoapCall::new("ReconfigVM_Task", &vm, ""))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(
        server.count("ReconfigVM_Task"),
        4,
        "retried up to the policy"
    );
}

#[tokio::test]
async fn dropping_the_last_client_logs_out() {
    let server = Server::start(Arc::new(|m, _, _| {
        common(m).unwrap_or_else(|| match m {
            "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
            _ => Reply::Http(404, "no"),
        })
    }))
    .await;
    let client = VsphereClient::new(config(&server.url)).unwrap();
    let vm = MoRef::new("VirtualMachine", "vm-1");
    client
        .call(&SoapCall::new("PowerOnVM_Task", &vm, ""))
        .await
        .unwrap();
    let other = client.clone();
    drop(client);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.count("Logout"), 0, "a clone still holds the session");
    drop(other);
    let mut waited = 0;
    while server.count("Logout") == 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(server.count("Logout"), 1);
}

fn request() -> LaunchRequest {
    let op: OperationId = "op-1".parse().unwrap();
    let pool: PoolId = "web-v1".parse().unwrap();
    let token = IdempotencyToken::derive(&op, &pool, 0, 0);
    let mut labels = Labels::new();
    labels.insert(keys::DEPLOYMENT, "shop");
    labels.insert(keys::POOL, "web-v1");
    labels.insert(keys::TOKEN, token.as_str());
    LaunchRequest {
        name: "web-v1-0".into(),
        image: ImageId::new("vm-1".to_owned()).unwrap(),
        flavor: None,
        boot: BootPayload::Guestinfo {
            properties: Default::default(),
        },
        labels,
        token,
    }
}

/// vCenter refuses a second VM of one name in a folder (vcsim does not:
/// it renames the second one's directory). A clone refused so is a
/// retried launch meeting its own VM, which is adopted, or a namesake,
/// which is not.
async fn clone_meets_a_namesake(namesake_token: String) -> (Result<ServerId, String>, Server) {
    let script: Script = Arc::new(move |m, body, _| {
        common(m)
            .or_else(|| placement(m, body))
            .unwrap_or_else(|| match m {
                // The folder read of the batch does not show it yet.
                "RetrievePropertiesEx" if body.contains("ContainerView") => Reply::Ok(
                    "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"/>".into(),
                ),
                "RetrievePropertiesEx" if body.contains("type=\"Task\"") => {
                    Reply::Ok(task_info("success"))
                }
                "RetrievePropertiesEx" if body.contains(">vm-9<") => Reply::Ok(format!(
                    "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects><obj type=\"VirtualMachine\">vm-9</obj><propSet><name>name</name><val>x</val></propSet><propSet><name>runtime.powerState</name><val>poweredOff</val></propSet><propSet><name>config.extraConfig[&quot;guestinfo.phoenix.label.phoenix-token&quot;]</name><val xsi:type=\"OptionValue\"><key>guestinfo.phoenix.label.phoenix-token</key><value>{namesake_token}</value></val></propSet></objects></returnval></RetrievePropertiesExResponse>"
                )),
                "CloneVM_Task" => Reply::Fault("DuplicateName", "The name 'x' already exists."),
                "FindChild" => Reply::Ok("<FindChildResponse xmlns=\"urn:vim25\"><returnval type=\"VirtualMachine\">vm-9</returnval></FindChildResponse>".into()),
                "ReconfigVM_Task" | "PowerOnVM_Task" => Reply::Ok(STARTED.into()),
                _ => Reply::Http(404, "no"),
            })
    });
    let server = Server::start(script).await;
    let client = VsphereClient::new(
        VsphereConfig::builder(&server.url)
            .unwrap()
            .datacenter("DC0")
            .resource_pool("C0/Resources")
            .task_poll(Duration::from_millis(5))
            .retry(RetryPolicy::none())
            .build()
            .unwrap(),
    )
    .unwrap();
    let compute = VsphereCompute::builder(client)
        .custom_attributes(false)
        .build();
    let got = compute
        .launch(&[request()])
        .await
        .remove(0)
        .map(|s| s.id)
        .map_err(|e| e.to_string());
    (got, server)
}

#[tokio::test]
async fn a_refused_clone_adopts_its_own_vm_only() {
    let own = request().token.as_str().to_owned();
    let (got, server) = clone_meets_a_namesake(own).await;
    assert_eq!(got, Ok(ServerId::new("vm-9".to_owned()).unwrap()));
    assert_eq!(server.count("CloneVM_Task"), 1, "not cloned again");
    assert_eq!(server.count("PowerOnVM_Task"), 1, "brought to the end");
    // Phoenix's keys are read by indexed paths, never the whole
    // extraConfig (which holds the user data).
    let reads = server.bodies("RetrievePropertiesEx").join("\n");
    assert!(reads.contains("<pathSet>config.extraConfig[&quot;guestinfo.phoenix.label.phoenix-token&quot;]</pathSet>"), "{reads}");
    assert!(!reads.contains("<pathSet>config.extraConfig</pathSet>"));

    let (got, server) = clone_meets_a_namesake("another-token".into()).await;
    let e = got.unwrap_err();
    assert!(e.contains("another token"), "{e}");
    assert_eq!(
        server.count("PowerOnVM_Task"),
        0,
        "a namesake is never touched"
    );
    assert_eq!(server.count("ReconfigVM_Task"), 0);
}
