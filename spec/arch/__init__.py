"""The Armv8-A architecture as KVM/arm64 uses it: translation geometry, descriptor formats, the hardware's table walk."""
