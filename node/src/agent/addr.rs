//! VIP addresses on interfaces, through netlink (rtnetlink), with a valid lifetime as a
//! one-second-resolution backstop behind the nftables fence.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
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
        addr: Ipv4Addr,
        prefix: u8,
        valid: Duration,
    ) -> Result<(), AddrError> {
        let index = ifindex(iface)?;
        let secs = valid.as_secs() as u32 + u32::from(valid.subsec_nanos() > 0);
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .replace();
        let mut info = CacheInfo::default();
        info.ifa_preferred = secs;
        info.ifa_valid = secs;
        req.message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(info));
        req.execute()
            .await
            .map_err(|e| AddrError(format!("adding {addr}/{prefix} to {iface}: {e}")))
    }

    /// The kernel's records of `addr` on `iface` (none or one).
    async fn find(&self, iface: &str, addr: Ipv4Addr) -> Result<Vec<AddressMessage>, AddrError> {
        let index = ifindex(iface)?;
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(addr))
            .execute()
            .try_collect()
            .await
            .map_err(|e| AddrError(e.to_string()))
    }

    /// Removes the address if present. One request naming the address (`IFA_LOCAL` only: the
    /// kernel then matches it whatever its prefix), not a dump of every address to find it
    /// first: rtnetlink filters a dump in user space, so letting N VIPs go cost N dumps of N
    /// addresses.
    pub async fn remove(&self, iface: &str, addr: Ipv4Addr) -> Result<(), AddrError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = ifindex(iface)?;
        msg.header.prefix_len = 32;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr)));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            // Not there (its lifetime ran out, someone else removed it, or never added).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {
                Ok(())
            }
            Err(e) => Err(AddrError(format!("removing {addr} from {iface}: {e}"))),
        }
    }

    /// Removes the address from whichever interface has it (for an address left by an earlier
    /// agent process whose interface is no longer known).
    pub async fn remove_anywhere(&self, addr: Ipv4Addr) -> Result<bool, AddrError> {
        let found: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_address_filter(IpAddr::V4(addr))
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
    pub async fn has(&self, iface: &str, addr: Ipv4Addr) -> Result<bool, AddrError> {
        Ok(!self.find(iface, addr).await?.is_empty())
    }
}
