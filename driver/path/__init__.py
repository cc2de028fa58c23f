"""`pynet path`: a container's packet path, hop by hop, from the live kernel
beside pynet's state (model.py), the rules a packet meets (walk.py), the
socket endpoint and the command (service.py, cli.py), and the pictures
drawn from the modes' declared hops (picture.py)."""
