//! Finding a vehicle's other endpoints from the one a client knows: the PUB endpoint. Every
//! state says the video socket's port (`state.link.video_port`) and the action socket's
//! (`state.commands.action_port`); on the host the client reached the PUB socket on, those
//! ports are the vehicle's video and action endpoints. A flag that names an endpoint always
//! wins over what is found here.

use crate::VehicleState;

/// Why an endpoint could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    #[error("{0:?} is not a tcp://HOST:PORT endpoint, so no other endpoint can be found from it")]
    NotTcp(String),
    #[error("the vehicle's state does not say its {0} port (a vehicle older than this client?)")]
    NoPort(&'static str),
}

/// The host of `tcp://HOST:PORT` (`[::1]` keeps its brackets).
pub fn tcp_host(endpoint: &str) -> Result<&str, DiscoverError> {
    let not_tcp = || DiscoverError::NotTcp(endpoint.to_string());
    let rest = endpoint.strip_prefix("tcp://").ok_or_else(not_tcp)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(not_tcp)?;
    if host.is_empty() || host == "*" || port.parse::<u16>().is_err() {
        return Err(not_tcp());
    }
    Ok(host)
}

/// The vehicle's endpoints as a client that reached its PUB socket at `pub_endpoint` finds
/// them in one of its states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub video: String,
    pub actions: String,
    /// Actions must be signed (the client needs the action key to act).
    pub signed_actions: bool,
}

/// The video and action endpoints of the vehicle whose `state` came from `pub_endpoint`.
pub fn endpoints(pub_endpoint: &str, state: &VehicleState) -> Result<Endpoints, DiscoverError> {
    endpoints_on(
        pub_endpoint,
        state.link.video_port,
        state.commands.action_port,
        state.commands.signed_actions,
    )
}

/// [`endpoints`] from the state's three fields.
pub fn endpoints_on(
    pub_endpoint: &str,
    video_port: u16,
    action_port: u16,
    signed_actions: bool,
) -> Result<Endpoints, DiscoverError> {
    let host = tcp_host(pub_endpoint)?;
    let port = |port: u16, what| if port == 0 { Err(DiscoverError::NoPort(what)) } else { Ok(port) };
    Ok(Endpoints {
        video: format!("tcp://{host}:{}", port(video_port, "video")?),
        actions: format!("tcp://{host}:{}", port(action_port, "action")?),
        signed_actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_reached_with_the_ports_the_vehicle_says() {
        let found = endpoints_on("tcp://10.0.0.7:7001", 7003, 7002, true).unwrap();
        assert_eq!(found.video, "tcp://10.0.0.7:7003");
        assert_eq!(found.actions, "tcp://10.0.0.7:7002");
        assert!(found.signed_actions);
        assert_eq!(endpoints_on("tcp://[::1]:5557", 1, 2, false).unwrap().video, "tcp://[::1]:1");
        assert_eq!(endpoints_on("tcp://car.local:5557", 1, 2, false).unwrap().actions, "tcp://car.local:2");
    }

    #[test]
    fn what_cannot_be_found_is_named() {
        assert_eq!(endpoints_on("tcp://car:5557", 0, 2, false), Err(DiscoverError::NoPort("video")));
        assert_eq!(endpoints_on("tcp://car:5557", 1, 0, false), Err(DiscoverError::NoPort("action")));
        for bad in ["ipc:///tmp/x", "tcp://car", "tcp://*:5557", "tcp://:5557", "tcp://car:x"] {
            assert!(matches!(endpoints_on(bad, 1, 2, false), Err(DiscoverError::NotTcp(_))), "{bad}");
        }
    }
}
