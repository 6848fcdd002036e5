import torch

# One thread for everything, module-scoped fixtures included: the tests run tiny networks, which
# are fastest on one thread and do not busy-wait when a shared 2-core CI machine is loaded.
torch.set_num_threads(1)
