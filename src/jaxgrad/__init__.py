"""jaxgrad: see, measure and cure vanishing and exploding gradients in deep networks."""

from jaxgrad import activations as activations
from jaxgrad import data as data
from jaxgrad import init as init
from jaxgrad import jacobian as jacobian
from jaxgrad import model_init as model_init
from jaxgrad import nn as nn
from jaxgrad import optim as optim
from jaxgrad import prng as prng
from jaxgrad import stats as stats
from jaxgrad import theory as theory
from jaxgrad import train as train
from jaxgrad.inspection import ModelReport as ModelReport
from jaxgrad.inspection import inspect as inspect
from jaxgrad.model_init import cure as cure
from jaxgrad.model_init import fixup as fixup
from jaxgrad.model_init import lsuv as lsuv
from jaxgrad.propagation import LayerStats as LayerStats
from jaxgrad.propagation import mean_square_loss as mean_square_loss
from jaxgrad.propagation import probe as probe
from jaxgrad.propagation import propagate as propagate
from jaxgrad.propagation import random_projection_loss as random_projection_loss
from jaxgrad.propagation import seed_configs as seed_configs
from jaxgrad.propagation import seed_experiment as seed_experiment
from jaxgrad.stats import Diagnosis as Diagnosis
from jaxgrad.stats import diagnose as diagnose

__version__ = "0.1.0"
