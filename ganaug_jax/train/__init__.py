"""GAN training: state, sharded jitted step, checkpoints and the run loop."""
