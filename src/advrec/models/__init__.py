"""Recommenders: every model is a `Recommender` with fit / score / recommend / save / load."""

from advrec.models.admm_slim import ADMMSLIM
from advrec.models.base import Recommender, model_class
from advrec.models.bert4rec import BERT4Rec
from advrec.models.bpr import BPRMF
from advrec.models.bspm import BSPM
from advrec.models.cfgan import CFGAN
from advrec.models.ease import EASE
from advrec.models.edlae import EDLAE
from advrec.models.ensemble import Ensemble
from advrec.models.genre import GenreAffinity
from advrec.models.gfcf import GFCF
from advrec.models.hybrid import TextEASE
from advrec.models.ials import IALS
from advrec.models.irgan import IRGAN
from advrec.models.item_knn import ItemKNN
from advrec.models.lightgcn import LightGCN
from advrec.models.mult_vae import MultVAE
from advrec.models.pop import Pop
from advrec.models.recvae import RecVAE
from advrec.models.sansa import SANSA
from advrec.models.sasrec import SASRec
from advrec.models.text_knn import TextKNN
from advrec.models.torch_base import TorchRecommender
from advrec.models.unisrec import UniSRec

__all__ = [
    "ADMMSLIM",
    "BPRMF",
    "BSPM",
    "CFGAN",
    "EASE",
    "EDLAE",
    "GFCF",
    "IALS",
    "IRGAN",
    "SANSA",
    "BERT4Rec",
    "Ensemble",
    "GenreAffinity",
    "ItemKNN",
    "LightGCN",
    "MultVAE",
    "Pop",
    "RecVAE",
    "Recommender",
    "SASRec",
    "TextEASE",
    "TextKNN",
    "TorchRecommender",
    "UniSRec",
    "model_class",
]
