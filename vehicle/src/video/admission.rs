//! Who gets a place on the video link when a new hello arrives. Pure logic, so the rules are
//! tested without sockets:
//!
//! * One network address holds at most `link.max_sessions_per_peer` sessions (0: no cap); at
//!   the cap, a new hello of that address takes the place of one of its own idle sessions
//!   (a viewer that reconnected), else it is refused.
//! * With a free place, the hello gets it.
//! * With none, the session idle longest goes (idle: a frame it was sent stayed uncredited
//!   for `link.session_idle_ms`, as a client that only says hello, or one gone quiet);
//!   a session signed with the action key is never displaced by an unsigned hello.
//! * A signed hello with no idle session to displace takes an unsigned session's place:
//!   clients without the key cannot keep the operator out by behaving.
//!
//! A signed hello is not held to the per-address cap: it proved it has the key.

/// A session that holds a place, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub identity: Vec<u8>,
    pub signed: bool,
    /// Its connection comes from the new hello's address.
    pub same_peer: bool,
    /// Idle since (monotonic ns); `None`: it credits what it is sent.
    pub idle_since_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_sessions: usize,
    /// 0: no cap.
    pub max_per_peer: usize,
}

/// What happens to a new hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Open,
    /// Close this session, then open the new one.
    Displace(Vec<u8>),
    /// Every place is held by a session it may not displace.
    Full,
    /// Its address holds its share already.
    PeerCap,
}

/// Decides for a hello (`signed`: its MAC matched the action key) given the sessions now.
pub fn decide(sessions: &[Candidate], limits: Limits, signed: bool) -> Admission {
    let may_displace = |c: &&Candidate| signed || !c.signed;
    let oldest_idle = |filter: &dyn Fn(&&Candidate) -> bool| {
        sessions
            .iter()
            .filter(|c| c.idle_since_ns.is_some() && may_displace(c) && filter(c))
            .min_by_key(|c| (c.idle_since_ns, c.identity.clone()))
            .map(|c| c.identity.clone())
    };
    let from_peer = sessions.iter().filter(|c| c.same_peer).count();
    if !signed && limits.max_per_peer > 0 && from_peer >= limits.max_per_peer {
        return oldest_idle(&|c| c.same_peer).map_or(Admission::PeerCap, Admission::Displace);
    }
    if sessions.len() < limits.max_sessions {
        return Admission::Open;
    }
    if let Some(victim) = oldest_idle(&|_| true) {
        return Admission::Displace(victim);
    }
    if signed {
        if let Some(victim) = sessions.iter().filter(|c| !c.signed).min_by_key(|c| c.identity.clone()) {
            return Admission::Displace(victim.identity.clone());
        }
    }
    Admission::Full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u8, signed: bool, same_peer: bool, idle: Option<u64>) -> Candidate {
        Candidate { identity: vec![id], signed, same_peer, idle_since_ns: idle }
    }

    const LIMITS: Limits = Limits { max_sessions: 3, max_per_peer: 2 };

    #[test]
    fn a_free_place_is_taken_and_a_full_link_gives_up_its_oldest_idle_session() {
        let two = [session(1, false, false, None), session(2, false, false, Some(5))];
        assert_eq!(decide(&two, LIMITS, false), Admission::Open);
        let full = [
            session(1, false, false, Some(9)),
            session(2, false, false, Some(5)),
            session(3, false, false, None),
        ];
        assert_eq!(decide(&full, LIMITS, false), Admission::Displace(vec![2]));
        let busy =
            [session(1, false, false, None), session(2, false, false, None), session(3, false, false, None)];
        assert_eq!(decide(&busy, LIMITS, false), Admission::Full);
    }

    #[test]
    fn signed_sessions_are_never_displaced_by_unsigned_hellos_and_displace_unsigned_ones() {
        let signed_idle = [
            session(1, true, false, Some(1)),
            session(2, true, false, Some(2)),
            session(3, false, false, None),
        ];
        assert_eq!(decide(&signed_idle, LIMITS, false), Admission::Full);
        assert_eq!(decide(&signed_idle, LIMITS, true), Admission::Displace(vec![1]), "idle first");
        let all_busy =
            [session(1, true, false, None), session(2, false, false, None), session(3, false, false, None)];
        assert_eq!(decide(&all_busy, LIMITS, true), Admission::Displace(vec![2]));
        let all_signed =
            [session(1, true, false, None), session(2, true, false, None), session(3, true, false, None)];
        assert_eq!(decide(&all_signed, LIMITS, true), Admission::Full);
    }

    #[test]
    fn one_address_holds_its_share_and_may_replace_its_own_idle_session() {
        let mine = [session(1, false, true, None), session(2, false, true, None)];
        assert_eq!(decide(&mine, LIMITS, false), Admission::PeerCap);
        assert_eq!(decide(&mine, LIMITS, true), Admission::Open, "a signed hello is not capped");
        let reconnect = [session(1, false, true, Some(3)), session(2, false, true, None)];
        assert_eq!(decide(&reconnect, LIMITS, false), Admission::Displace(vec![1]));
        let uncapped = Limits { max_per_peer: 0, ..LIMITS };
        assert_eq!(decide(&mine, uncapped, false), Admission::Open);
    }
}
