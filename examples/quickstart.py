"""The three rlink patterns in one process. Run: python examples/quickstart.py"""
import threading

import numpy as np
import rlink

# Many-to-one: actors send trajectories, the learner receives them.
learner = rlink.LearnerNode(port=5555)
actor = rlink.ActorNode(learner_address="localhost:5555")

trajectory = {
    "obs": np.random.rand(64, 4).astype(np.float32),
    "actions": np.random.randint(0, 2, size=64),
    "rewards": np.ones(64, dtype=np.float32),
}
actor.send_trajectory(trajectory)
message = learner.receive_message(timeout=5)
print(f"trajectory from actor {message.actor_id:#x}: return {message.data['rewards'].sum()}")

# One-to-many: the learner publishes parameters to every actor.
learner.publish_parameters({"w": np.random.rand(4, 2).astype(np.float32)})
params = actor.wait_parameters(timeout=5)
print(f"actor holds parameters version {params.version}, w shape {params.data['w'].shape}")


# Bidirectional: the actor asks, the learner answers (central inference).
def serve_one_request():
    request = learner.receive_request(timeout=5)
    request.reply({"action": np.int64(request.data["obs"].argmax())})


server = threading.Thread(target=serve_one_request)
server.start()
reply = actor.request({"obs": np.array([0.1, 0.9, 0.3])}, timeout=5)
server.join()
print(f"learner chose action {reply['action']}")

actor.close()
learner.close()
