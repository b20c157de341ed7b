local kurir = require "kurir"
require("kurir.mock").setup(kurir, arg)
