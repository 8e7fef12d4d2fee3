"""Pure algorithm core: no rclpy, no message types."""
