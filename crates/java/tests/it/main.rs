//! Integration tests of jarfleet-java against real JVMs and the Spring-Boot-shaped fixture
//! (`fixtures/boot`): layout extraction, CDS / AOT-cache training and use.

mod boot;
mod cds;
mod fixture;
mod http;
mod jvm;
