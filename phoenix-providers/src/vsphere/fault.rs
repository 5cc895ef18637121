//! What a vSphere answer means. A SOAP Fault's `detail` names the vim25
//! fault type (`NotAuthenticated`, `InvalidPowerState`,
//! `ManagedObjectNotFound`, `DuplicateName`, …); a failed task carries the
//! same in its `TaskInfo.error`. Both become a [`PortError`] classified by
//! that type, with a [`VsphereFault`] as its source that keeps the type and
//! vSphere's own message; [`vsphere_fault`] reads it back.

use phoenix_core::ports::{ErrorKind, PortError};

use super::xml::Element;

/// A fault vSphere answered, as it worded it: the source of the
/// [`PortError`] a failed call or task returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method}: {fault_type}: {message}")]
pub struct VsphereFault {
    /// The method or task (`CloneVM_Task`, `PowerOnVM_Task`).
    pub method: String,
    /// The vim25 fault type (`InvalidPowerState`), or `(none)` when the
    /// answer named none.
    pub fault_type: String,
    /// vSphere's message (`faultstring` or `localizedMessage`), scrubbed
    /// of secrets.
    pub message: String,
}

/// The vSphere fault behind a failed call, if vSphere answered one.
pub fn vsphere_fault(error: &PortError) -> Option<&VsphereFault> {
    error.source.as_ref()?.downcast_ref::<VsphereFault>()
}

/// The fault type and message of a SOAP `Fault` element.
pub(crate) fn read_soap_fault(fault: &Element) -> (String, String) {
    let message = fault
        .child_text("faultstring")
        .unwrap_or_default()
        .to_owned();
    // <detail><InvalidPowerStateFault xsi:type="InvalidPowerState">…
    // The element is named `<Type>Fault`; the xsi:type, where given, is
    // the precise type.
    let fault_type = fault
        .child("detail")
        .and_then(|d| d.children.first())
        .map(|f| {
            f.xsi_type()
                .map(|t| t.rsplit(':').next().unwrap_or(t).to_owned())
                .unwrap_or_else(|| {
                    f.name
                        .strip_suffix("Fault")
                        .filter(|s| !s.is_empty())
                        .unwrap_or(&f.name)
                        .to_owned()
                })
        })
        .unwrap_or_else(|| "(none)".to_owned());
    (fault_type, message)
}

/// The fault type and message of a `TaskInfo.error` (a
/// `LocalizedMethodFault`).
pub(crate) fn read_task_error(error: &Element) -> (String, String) {
    let fault_type = error
        .child("fault")
        .and_then(|f| f.xsi_type())
        .map(|t| t.rsplit(':').next().unwrap_or(t).to_owned())
        .unwrap_or_else(|| "(none)".to_owned());
    let message = error
        .child_text("localizedMessage")
        .unwrap_or_default()
        .to_owned();
    (fault_type, message)
}

/// Fault types after which the same call may succeed later: the object is
/// busy or the service is momentarily unable.
const RETRYABLE: &[&str] = &[
    "TaskInProgress",
    "ConcurrentAccess",
    "HostCommunication",
    "HostNotConnected",
    "HostNotReachable",
    "RequestCanceled",
    "SystemError",
    "Timedout",
    "HostConnectFault",
    "ResourceInUse",
    // Capacity comes back (HA admission control, a host leaving
    // maintenance); a later try may get it.
    "InsufficientResourcesFault",
    "InsufficientHostCapacityFault",
    "ApplicationQuiesceFault",
    "NetworkCopyFault",
];

/// Fault types that mean the thing is not there.
const NOT_FOUND: &[&str] = &["ManagedObjectNotFound", "NotFound", "InvalidDatastorePath"];

/// Fault types that mean the object is in the wrong state for the call:
/// retrying as is will not help.
const CONFLICT: &[&str] = &[
    "InvalidPowerState",
    "InvalidState",
    "DuplicateName",
    "AlreadyExists",
    "FileAlreadyExists",
    "VmConfigIncompatibleForPowerOn",
    "InvalidVmState",
    "DisallowedOperationOnFailoverHost",
];

/// Fault types about identity or rights.
const UNAUTHORIZED: &[&str] = &[
    "InvalidLogin",
    "NoPermission",
    "NotAuthenticated",
    "RestrictedVersion",
    "NoClientCertificate",
    "InvalidCertificate",
];

/// Fault types about the request itself.
const INVALID: &[&str] = &[
    "InvalidArgument",
    "InvalidRequest",
    "InvalidType",
    "InvalidName",
    "InvalidProperty",
    "InvalidCollectorVersion",
    "InvalidDeviceSpec",
    "InvalidController",
    "VmConfigFault",
    "CustomizationFault",
];

/// The classification of a fault type. `NotAuthenticated` is
/// `Unauthorized` here; the client logs in again once and repeats the
/// call before that classification reaches a caller.
pub(crate) fn kind_of(fault_type: &str, text: String) -> ErrorKind {
    if RETRYABLE.contains(&fault_type) {
        return ErrorKind::Temporary(text);
    }
    if NOT_FOUND.contains(&fault_type) {
        return ErrorKind::NotFound(text);
    }
    if CONFLICT.contains(&fault_type) {
        return ErrorKind::Conflict(text);
    }
    if UNAUTHORIZED.contains(&fault_type) {
        return ErrorKind::Unauthorized(text);
    }
    if INVALID.contains(&fault_type) {
        return ErrorKind::Invalid(text);
    }
    if fault_type == "NotSupported" || fault_type == "NotImplemented" {
        return ErrorKind::Unsupported(text);
    }
    ErrorKind::Permanent(text)
}

/// A [`PortError`] for `fault`, classified by its type.
pub(crate) fn port_error(operation: &str, fault: VsphereFault) -> PortError {
    let text = format!("{}: {}", fault.fault_type, fault.message);
    PortError::new(operation, kind_of(&fault.fault_type, text)).with_source(fault)
}

/// The fault type of a [`PortError`] from vSphere, if any.
pub fn fault_type(error: &PortError) -> Option<&str> {
    vsphere_fault(error).map(|f| f.fault_type.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml;

    #[test]
    fn soap_fault_keeps_type_and_message() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The session is not authenticated.</faultstring><detail><NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated"><object type="Folder">group-d1</object><privilegeId>System.View</privilegeId></NotAuthenticatedFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let env = xml::parse(doc).unwrap();
        let f = xml::body(&env).unwrap();
        assert_eq!(f.name, "Fault");
        let (t, m) = read_soap_fault(f);
        assert_eq!(t, "NotAuthenticated");
        assert_eq!(m, "The session is not authenticated.");
        // Without xsi:type the element name says it.
        let doc = r#"<Envelope><Body><Fault><faultstring>x</faultstring><detail><InvalidPowerStateFault/></detail></Fault></Body></Envelope>"#;
        let env = xml::parse(doc).unwrap();
        assert_eq!(
            read_soap_fault(xml::body(&env).unwrap()).0,
            "InvalidPowerState"
        );
    }

    #[test]
    fn task_error_keeps_type_and_message() {
        let doc = r#"<error xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><fault xsi:type="InvalidPowerState"><requestedState>poweredOff</requestedState></fault><localizedMessage>The attempted operation cannot be performed in the current state (Powered on).</localizedMessage></error>"#;
        let e = xml::parse(doc).unwrap();
        let (t, m) = read_task_error(&e);
        assert_eq!(t, "InvalidPowerState");
        assert!(m.contains("Powered on"));
    }

    #[test]
    fn classification_retryable_or_permanent() {
        let k = |t: &str| kind_of(t, t.to_owned());
        for t in [
            "TaskInProgress",
            "HostCommunication",
            "SystemError",
            "Timedout",
        ] {
            assert!(matches!(k(t), ErrorKind::Temporary(_)), "{t}");
        }
        assert!(matches!(k("ManagedObjectNotFound"), ErrorKind::NotFound(_)));
        assert!(matches!(k("InvalidPowerState"), ErrorKind::Conflict(_)));
        assert!(matches!(k("DuplicateName"), ErrorKind::Conflict(_)));
        assert!(matches!(k("InvalidLogin"), ErrorKind::Unauthorized(_)));
        assert!(matches!(k("NotAuthenticated"), ErrorKind::Unauthorized(_)));
        assert!(matches!(k("InvalidArgument"), ErrorKind::Invalid(_)));
        assert!(matches!(k("NotSupported"), ErrorKind::Unsupported(_)));
        assert!(matches!(k("SomethingNew"), ErrorKind::Permanent(_)));
        // A full datastore does not empty itself.
        assert!(matches!(k("NoDiskSpace"), ErrorKind::Permanent(_)));

        let e = port_error(
            "vsphere PowerOnVM_Task vm-1",
            VsphereFault {
                method: "PowerOnVM_Task".into(),
                fault_type: "TaskInProgress".into(),
                message: "busy".into(),
            },
        );
        assert!(e.is_retryable());
        assert_eq!(fault_type(&e), Some("TaskInProgress"));
        assert_eq!(
            e.chain(),
            "vsphere PowerOnVM_Task vm-1: temporarily unavailable: TaskInProgress: busy: PowerOnVM_Task: TaskInProgress: busy"
        );
    }
}
