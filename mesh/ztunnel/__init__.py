"""The node proxy: inbound HBONE server, outbound capture/forwarding, certificates, admin."""
