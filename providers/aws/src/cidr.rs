//! IPv4 CIDR arithmetic for carving a cluster's subnets out of its VPC's range.

/// An IPv4 CIDR block, for carving subnets from a VPC's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = text.split_once('/')?;
        let address: std::net::Ipv4Addr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Self {
            base: u32::from(address) & Self::mask(prefix),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        let (a_end, b_end) = (
            self.base as u64 + self.size(),
            other.base as u64 + other.size(),
        );
        (self.base as u64) < b_end && (other.base as u64) < a_end
    }

    /// Subnets are 1/16 of the VPC (a /20 of a /16), at most /28, the smallest AWS allows.
    pub(crate) fn subnet_prefix(&self) -> u8 {
        (self.prefix + 4).min(28)
    }

    /// The first subnet-sized block of this range that overlaps none of `taken`.
    pub(crate) fn free_block(&self, taken: &[Cidr]) -> Option<Cidr> {
        let prefix = self.subnet_prefix();
        let step = 1u64 << (32 - prefix);
        (0..self.size() / step)
            .map(|i| Cidr {
                base: (self.base as u64 + i * step) as u32,
                prefix,
            })
            .find(|block| !taken.iter().any(|t| t.overlaps(block)))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", std::net::Ipv4Addr::from(self.base), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_carved_from_free_space_of_the_vpc() {
        let vpc = Cidr::parse("10.0.0.0/16").unwrap();
        let taken = vec![
            Cidr::parse("10.0.0.0/24").unwrap(),
            Cidr::parse("10.0.16.0/20").unwrap(),
        ];
        assert_eq!(vpc.free_block(&taken).unwrap().to_string(), "10.0.32.0/20");
        assert_eq!(vpc.free_block(&[]).unwrap().to_string(), "10.0.0.0/20");
        let small = Cidr::parse("192.168.8.0/22").unwrap();
        assert_eq!(small.free_block(&[]).unwrap().to_string(), "192.168.8.0/26");
        let full: Vec<_> = (0..16)
            .map(|i| Cidr::parse(&format!("10.0.{}.0/20", i * 16)).unwrap())
            .collect();
        assert_eq!(vpc.free_block(&full), None);
    }
}
