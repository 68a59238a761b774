//! VIP addresses on interfaces, through netlink (rtnetlink), with a valid lifetime as a
//! one-second-resolution backstop behind the nftables fence. IPv6 addresses are added
//! without duplicate address detection (`IFA_F_NODAD`): the fence, not DAD, keeps two nodes
//! from answering for one address, and DAD would hold a new owner's address tentative (silent)
//! for a second or more after its grant.

use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use rtnetlink::packet_route::AddressFamily;

#[derive(Debug, thiserror::Error)]
#[error("netlink: {0}")]
pub struct AddrError(pub String);

/// A netlink connection for address changes in this network namespace.
#[derive(Clone)]
pub struct Addresses {
    handle: rtnetlink::Handle,
}

fn ifindex(iface: &str) -> Result<u32, AddrError> {
    let name = std::ffi::CString::new(iface)
        .map_err(|_| AddrError(format!("bad interface name {iface:?}")))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(AddrError(format!("no interface {iface:?}")));
    }
    Ok(idx)
}

impl Addresses {
    /// Opens a netlink socket (its task runs on the current Tokio runtime).
    pub fn connect() -> Result<Self, AddrError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| AddrError(e.to_string()))?;
        tokio::spawn(conn);
        Ok(Addresses { handle })
    }

    /// Adds the address, or refreshes its lifetime if present. The kernel removes it by
    /// itself `valid` after the last refresh (rounded up to whole seconds).
    pub async fn add_or_refresh(
        &self,
        iface: &str,
        addr: IpAddr,
        prefix: u8,
        valid: Duration,
    ) -> Result<(), AddrError> {
        let index = ifindex(iface)?;
        let secs = valid.as_secs() as u32 + u32::from(valid.subsec_nanos() > 0);
        let mut req = self.handle.address().add(index, addr, prefix).replace();
        let mut info = CacheInfo::default();
        info.ifa_preferred = secs;
        info.ifa_valid = secs;
        let msg = req.message_mut();
        msg.attributes.push(AddressAttribute::CacheInfo(info));
        if addr.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(|e| AddrError(format!("adding {addr}/{prefix} to {iface}: {e}")))
    }

    /// The kernel's records of `addr` on `iface` (none or one).
    async fn find(&self, iface: &str, addr: IpAddr) -> Result<Vec<AddressMessage>, AddrError> {
        let index = ifindex(iface)?;
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(|e| AddrError(e.to_string()))
    }

    /// Removes the address if present. IPv4: one request naming the address (`IFA_LOCAL`
    /// only: the kernel then matches it whatever its prefix), not a dump of every address to
    /// find it first: rtnetlink filters a dump in user space, so letting N VIPs go cost N dumps
    /// of N addresses. IPv6 still pays that dump (below).
    pub async fn remove(&self, iface: &str, addr: IpAddr) -> Result<(), AddrError> {
        let msgs = match addr {
            IpAddr::V4(_) => {
                let mut msg = AddressMessage::default();
                msg.header.family = AddressFamily::Inet;
                msg.header.index = ifindex(iface)?;
                msg.header.prefix_len = 32;
                msg.attributes.push(AddressAttribute::Local(addr));
                vec![msg]
            }
            // The kernel deletes an IPv6 address only when the request names its prefix length
            // too, which the agent does not keep: the address's own record, as the kernel
            // lists it, names both (one dump of this interface's addresses per removal).
            IpAddr::V6(_) => self.find(iface, addr).await?,
        };
        for msg in msgs {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                // Not there (its lifetime ran out, someone else removed it, or never added).
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {
                    continue
                }
                Err(e) => return Err(AddrError(format!("removing {addr} from {iface}: {e}"))),
            }
        }
        Ok(())
    }

    /// Removes the address from whichever interface has it (for an address left by an earlier
    /// agent process whose interface is no longer known).
    pub async fn remove_anywhere(&self, addr: IpAddr) -> Result<bool, AddrError> {
        let found: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(|e| AddrError(e.to_string()))?;
        let any = !found.is_empty();
        for msg in found {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(e) => return Err(AddrError(format!("removing {addr}: {e}"))),
            }
        }
        Ok(any)
    }

    /// Whether the address is on the interface.
    pub async fn has(&self, iface: &str, addr: IpAddr) -> Result<bool, AddrError> {
        Ok(!self.find(iface, addr).await?.is_empty())
    }
}
