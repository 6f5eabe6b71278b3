"""Radio-map simulators that write RadioMapSeer-layout folders: the built-in synthetic city generator (free space,
multi-wall loss, shadowing; nothing to download) and Sionna RT ray tracing of real city centres (optional extra)."""
